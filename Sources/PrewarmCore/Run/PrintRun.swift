/// A print-mode command line (`claude -p [PROMPT] ...`) that a warm stream-json spare can serve,
/// read with the CLI's own grammar (`ClaudeCommandLine`), and what to give that spare: its
/// command line (the print flags taken out, the stream-json ones put in) and the prompt as a
/// user message. `parse` answers nil for anything to leave to the real CLI, which then says
/// what is wrong itself (recorded, CLI 2.1.332):
/// - no `-p`/`--print`; a subcommand; more than one operand; an option the CLI does not know;
/// - `--output-format stream-json` without `--verbose` (the CLI: `Error: When using --print,
///   --output-format=stream-json requires --verbose`, stderr, exit 1);
/// - `--include-partial-messages` without stream-json output (`Error:
///   --include-partial-messages requires --print and --output-format=stream-json.`, exit 1);
/// - `--input-format` other than text (already an SDK-style run);
/// - options that change what kind of run it is (help, version, forked sessions, remote or
///   background runs, the CLI's own control surfaces): see `refused`. A resumed or continued
///   session (`--resume S`, `--continue`) is served: the spare resumes it in stream-json;
/// - no prompt operand while stdin is a terminal (the CLI: `Error: Input must be provided
///   either through stdin or as a prompt argument when using --print`);
/// - limits the text printer would print in a way not reproduced here (`--max-turns` not a
///   plain integer, `--max-budget-usd` not a plain decimal).
public struct PrintRun: Sendable, Equatable {
    /// The prompt operand; nil: the prompt is stdin's content.
    public var prompt: String?
    public var format: PrintConversion.Format
    public var verbose: Bool
    public var partialMessages: Bool
    public var limits: PrintConversion.Limits
    /// The spare's command line (after the executable): the caller's options as written, minus
    /// `-p`, `--output-format`, `--verbose`, `--include-partial-messages` and the operand, plus
    /// `--output-format stream-json --verbose --input-format stream-json`
    /// [`--include-partial-messages`].
    public var spareArguments: [String]

    /// The converter for this run's caller.
    public func conversion(stdoutIsTerminal: Bool = false, stderrIsTerminal: Bool = false) -> PrintConversion {
        PrintConversion(
            format: format, verbose: verbose, partialMessages: partialMessages, limits: limits, stdoutIsTerminal: stdoutIsTerminal,
            stderrIsTerminal: stderrIsTerminal
        )
    }

    /// The arguments after the executable's name.
    public static func parse(_ arguments: [String], stdinIsTerminal: Bool) -> PrintRun? {
        parse(ClaudeCommandLine(arguments), stdinIsTerminal: stdinIsTerminal)
    }

    /// A command line already read with the CLI's grammar (the daemon reads a run's once).
    public static func parse(_ line: ClaudeCommandLine, stdinIsTerminal: Bool) -> PrintRun? {
        guard line.has("--print"), line.unknown.isEmpty, line.operands.count <= 1 else { return nil }
        if let first = line.operands.first, subcommands.contains(first) { return nil }
        if line.options.contains(where: { refused.contains($0.name) }) { return nil }
        // `-pc` and the like: one word holding several flags cannot be split for the spare.
        if line.options.contains(where: { $0.words.count == 1 && !$0.words[0].hasPrefix("--") && $0.words[0].count > 2 && $0.value == nil }) {
            return nil
        }
        if let input = line.last("--input-format"), input != "text" { return nil }
        guard let format = PrintConversion.Format(rawValue: line.last("--output-format") ?? "text") else { return nil }
        let verbose = line.has("--verbose")
        let partial = line.has("--include-partial-messages")
        if format == .streamJSON, !verbose { return nil }
        if partial, format != .streamJSON { return nil }
        let prompt = line.operands.first
        if prompt == nil || prompt == "", stdinIsTerminal { return nil }
        var limits = PrintConversion.Limits()
        if let turns = line.last("--max-turns") {
            guard !turns.isEmpty, turns.utf8.allSatisfy({ (0x30...0x39).contains($0) }), let value = Int(turns) else { return nil }
            limits.maxTurns = String(value)
        }
        if let budget = line.last("--max-budget-usd") {
            guard let text = javaScriptNumber(budget) else { return nil }
            limits.maxBudgetUSD = text
        }
        var spare: [String] = []
        for option in line.options where !printOnly.contains(option.name) {
            spare += option.words
        }
        spare += ["--output-format", "stream-json", "--verbose", "--input-format", "stream-json"]
        if partial { spare.append("--include-partial-messages") }
        return PrintRun(
            prompt: prompt, format: format, verbose: verbose, partialMessages: partial, limits: limits, spareArguments: spare
        )
    }

    /// The user's message, as the CLI makes it: the prompt operand, then a newline and stdin's
    /// content if there is any (`-p "Say hello"` with `STDIN TEXT\n` piped in is
    /// `Say hello\nSTDIN TEXT\n`); nil when both are empty (the CLI then writes
    /// `noInputError` to stderr and exits 1).
    public func message(stdin: String) -> String? {
        let prompt = self.prompt ?? ""
        switch (prompt.isEmpty, stdin.isEmpty) {
        case (true, true): return nil
        case (false, true): return prompt
        case (true, false): return stdin
        case (false, false): return prompt + "\n" + stdin
        }
    }

    public static let noInputError = "Error: Input must be provided either through stdin or as a prompt argument when using --print\n"

    /// The spare's stdin: the message as one stream-json user line (the daemon's own,
    /// `SessionSettings.userLine`).
    public static func userLine(_ message: String) -> [UInt8] {
        Array(SessionSettings.userLine(prompt: message).utf8)
    }

    /// A plain decimal (`0.5`, `10`, `.25`, `0.00000001`) as JavaScript prints the number it
    /// parses to (`0.5`, `10`, `0.25`, `1e-8`); nil for anything else, and for more than 15
    /// significant digits (up to 15, the decimal's own digits are the double's shortest ones,
    /// which JavaScript prints; beyond, the choice between candidates is not reproduced here).
    public static func javaScriptNumber(_ text: String) -> String? {
        let characters = Array(text)
        let digitCount = characters.filter(\.isASCII).filter(\.isNumber).count
        guard digitCount > 0, digitCount == characters.count - (characters.contains(".") ? 1 : 0),
            characters.filter({ $0 == "." }).count <= 1, let value = Double(text), value.isFinite
        else { return nil }
        let dot = characters.firstIndex(of: ".") ?? characters.count
        var significant = characters.filter { $0 != "." }
        var point = dot  // value = 0.significant × 10^point
        while significant.first == "0" {
            significant.removeFirst()
            point -= 1
        }
        while significant.last == "0" { significant.removeLast() }
        if significant.isEmpty { return "0" }
        guard significant.count <= 15, value != 0 else { return nil }
        let k = significant.count
        let n = point
        let s = String(significant)
        if k <= n && n <= 21 { return s + String(repeating: "0", count: n - k) }
        if 0 < n && n <= 21 { return String(significant[0..<n]) + "." + String(significant[n...]) }
        if -6 < n && n <= 0 { return "0." + String(repeating: "0", count: -n) + s }
        let e = n - 1
        let head = k == 1 ? s : String(significant[0]) + "." + String(significant[1...])
        return head + "e" + (e < 0 ? "-" : "+") + String(abs(e))
    }

    /// Options print mode owns; the spare gets its own.
    static let printOnly: Set<String> = ["--print", "--output-format", "--verbose", "--include-partial-messages", "--input-format"]

    /// Options that make it another kind of run than one prompt answered in a fresh session.
    static let refused: Set<String> = [
        "--help", "--version", "--fork-session", "--resume-session-at", "--resume-drops-turn",
        "--rewind-files", "--from-pr", "--teleport", "--cloud", "--remote", "--remote-control", "--background", "--worktree",
        "--tmux", "--ide", "--chrome", "--sdk-url", "--await-claim", "--await-initialize", "--bg-spare", "--init", "--init-only",
        "--maintenance", "--replay-user-messages", "--permission-prompt-tool", "--attach-serve", "--exec", "-m", "--handle-uri",
        "--messaging-socket-path", "--prefill", "--prefill-b64", "--deep-link-origin", "--deep-link-repo", "--deep-link-last-fetch",
        "--deep-link-cwd-b64", "--session-mirror", "--managed-settings-in-initialize", "--initialize-fields", "--runner-declares",
        "--watch-artifact", "--watch-artifact-no-autoreact", "--routine", "--pool", "--preload", "--hold-repository-while-parked",
        "--agents-view-if-allowed", "--enable-auth-status", "--session-began-as-copy",
    ]

    /// The CLI's subcommands (`claude mcp list`): never a prompt for this purpose.
    static let subcommands: Set<String> = [
        "add", "agents", "auth", "auto-mode", "config", "doctor", "gateway", "install", "login", "logout", "marketplace", "mcp",
        "migrate-installer", "plugin", "plugins", "project", "rc", "remote-control", "sandbox", "serve", "setup", "setup-token",
        "ultrareview", "uninstall", "update", "upgrade", "workspace-trust",
    ]
}
