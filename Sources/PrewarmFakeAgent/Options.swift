// Options.swift — command-line options of prewarm-fake-agent.
//
// Parsed by hand from CommandLine.arguments (no argument-parser dependency, so
// start-up stays cheap). Every valued option accepts both `--opt N` and
// `--opt=N`. An unknown option or a bad value is a usage error: one line on
// stderr and exit status 64 (EX_USAGE).

/// Everything the command line can configure. Durations are milliseconds,
/// sizes are MiB; all values are non-negative integers.
struct Options {
    // Start-up work.
    var initMs = 0
    var initCPUMs = 0
    var initSleepMs = 0
    var initMiB = 0
    // Turn shape.
    var turnMiB = 0
    var ttftMs = 0
    var ttftCPUMs = 0
    var tokens = 5
    var tokenMs = 0
    // Idle behaviour.
    var chatterMs = 0
    // Faults.
    var failInit = false
    var hangInit = false
    var crashMidTurn = false
    var hangTurn = false
    var garbage = false
    var forkChild = false
    // The real CLI's flags, so a `kind = "claude"` pool can run the fake: parked until a
    // claim_session request (`--await-claim`), and the session flags it reports back.
    var awaitClaim = false
    /// How long a claim takes to be answered (the real CLI: 54-139 ms).
    var claimMs = 0
    var permissionMode: String?
    var resume: String?
    // Meta.
    var help = false
    var version = false

    /// Hidden option: the grandchild started by `--fork-child` runs the same
    /// binary with only this argument and does nothing but sleep.
    static let grandchildSleepFlag = "--grandchild-sleep"

    /// Values above this are rejected so that `N * 1 MiB` and `N ms` in
    /// nanoseconds can never overflow.
    static let maxValue = Int(Int32.max)
}

/// A command-line mistake; `message` is shown after the program name.
struct UsageError: Error {
    let message: String
}

extension Options {
    /// Parses `arguments` (without the program name).
    static func parse(_ arguments: some Sequence<String>) throws(UsageError) -> Options {
        var options = Options()
        var iterator = arguments.makeIterator()
        while let argument = iterator.next() {
            let (name, inlineValue) = splitOption(argument)
            if Self.ignoredFlags.contains(name) {
                continue
            } else if let field = stringField(name) {
                guard let value = inlineValue ?? iterator.next() else {
                    throw UsageError(message: "option '\(name)' needs a value")
                }
                if let field { options[keyPath: field] = value }
            } else if let flag = flagField(name) {
                if inlineValue != nil { throw UsageError(message: "option '\(name)' takes no value") }
                options[keyPath: flag] = true
            } else if let field = valueField(name) {
                guard let value = inlineValue ?? iterator.next() else {
                    throw UsageError(message: "option '\(name)' needs a value")
                }
                options[keyPath: field] = try parseCount(value, for: name)
            } else if argument.hasPrefix("-") {
                throw UsageError(message: "unknown option '\(name)'")
            } else {
                throw UsageError(message: "unexpected argument '\(argument)'")
            }
        }
        return options
    }

    /// Splits `--opt=value` into (`--opt`, `value`); other arguments are returned whole.
    private static func splitOption(_ argument: String) -> (String, String?) {
        guard argument.hasPrefix("--"), let equals = argument.firstIndex(of: "=") else {
            return (argument, nil)
        }
        return (String(argument[..<equals]), String(argument[argument.index(after: equals)...]))
    }

    /// The field set by a boolean flag, or nil when `name` is not one.
    private static func flagField(_ name: String) -> WritableKeyPath<Options, Bool>? {
        switch name {
        case "--fail-init": \.failInit
        case "--hang-init": \.hangInit
        case "--crash-mid-turn": \.crashMidTurn
        case "--hang-turn": \.hangTurn
        case "--garbage": \.garbage
        case "--fork-child": \.forkChild
        case "--await-claim": \.awaitClaim
        case "--version", "-v": \.version
        case "--help", "-h": \.help
        default: nil
        }
    }

    /// The CLI's flags that change nothing in the fake.
    static let ignoredFlags: Set<String> = ["--verbose", "--include-partial-messages", "--print", "-p"]

    /// The CLI's valued options: `.some(field)` for those the fake reports back,
    /// `.some(nil)` for those it accepts and ignores, nil when `name` is not one.
    private static func stringField(_ name: String) -> WritableKeyPath<Options, String?>?? {
        switch name {
        case "--permission-mode": .some(\.permissionMode)
        case "--resume": .some(\.resume)
        case "--output-format", "--input-format", "--permission-prompt-tool", "--system-prompt", "--append-system-prompt", "--add-dir", "--model",
            "--max-turns", "--allowedTools", "--disallowedTools":
            .some(nil)
        default: nil
        }
    }

    /// The field set by a valued option, or nil when `name` is not one.
    private static func valueField(_ name: String) -> WritableKeyPath<Options, Int>? {
        switch name {
        case "--init-ms": \.initMs
        case "--init-cpu-ms": \.initCPUMs
        case "--init-sleep-ms": \.initSleepMs
        case "--init-mib": \.initMiB
        case "--turn-mib": \.turnMiB
        case "--ttft-ms": \.ttftMs
        case "--ttft-cpu-ms": \.ttftCPUMs
        case "--tokens": \.tokens
        case "--token-ms": \.tokenMs
        case "--chatter-ms": \.chatterMs
        case "--claim-ms": \.claimMs
        default: nil
        }
    }

    private static func parseCount(_ value: String, for name: String) throws(UsageError) -> Int {
        guard let number = Int(value), (0...maxValue).contains(number) else {
            throw UsageError(message: "option '\(name)' needs an integer from 0 to \(maxValue), got '\(value)'")
        }
        return number
    }
}

extension Options {
    static let usage = """
        usage: prewarm-fake-agent [options]

        A stand-in for `claude --output-format stream-json --verbose --input-format stream-json`:
        reads newline-delimited JSON on stdin, answers initialize control requests, and
        streams a fake reply for every {"type":"user"} line. Exits 0 when stdin ends.

        The Claude Code CLI's flags, so a kind = "claude" pool can run it:
          --await-claim       park until a claim_session control request (cwd,
                              permission_mode, env) binds it; refuse a user message before
          --claim-ms N        take N ms to answer a claim (default 0)
          --permission-mode M, --resume ID   reported in system/init
          --output-format, --input-format, --permission-prompt-tool, --system-prompt,
          --append-system-prompt, --add-dir, --model, --max-turns (with a value), --verbose,
          --include-partial-messages, --print: accepted and ignored
          --version           print a version and exit

        Start-up work (done before stdin is read):
          --init-ms N         burn CPU for N ms of wall time (default 0)
          --init-cpu-ms N     burn N ms of CPU time: slower when the CPU is shared (default 0)
          --init-sleep-ms N   sleep N ms (default 0)
          --init-mib N        allocate and touch N MiB, kept for the process's life (default 0)

        Turns:
          --turn-mib N        allocate and touch N more MiB at the start of every turn (default 0)
          --ttft-ms N         delay before the first token (default 0)
          --ttft-cpu-ms N     then N ms of CPU time before the first token (default 0)
          --tokens N          number of token events per turn (default 5)
          --token-ms N        delay between tokens (default 0)

        Idle behaviour:
          --chatter-ms N      while idle, every N ms write an unrequested ui_invalidate line
                              to stdout and "chatter <pid>" to stderr (default 0: off)

        Faults:
          --fail-init         fail start-up: message on stderr, exit 1
          --hang-init         never finish start-up (never reads stdin)
          --crash-mid-turn    exit 3 after the first token of a turn
          --hang-turn         hang forever after a turn's system/init line (also: a
                              prompt containing PREWARM_HANG_TURN)
          A prompt containing PREWARM_PARTIAL_EXIT (PREWARM_PARTIAL_HANG): write a line
                              without its newline after system/init, then exit 5
                              (hang until killed); PREWARM_LONG_ANSWER: 3000 tokens, 1 ms apart
          --garbage           write non-JSON lines at start-up and in every turn
          --fork-child        spawn a sleeping grandchild in the same process group;
                              its pid is reported as child_pid

          -h, --help          show this help

        Every valued option also accepts --option=N.
        """
}
