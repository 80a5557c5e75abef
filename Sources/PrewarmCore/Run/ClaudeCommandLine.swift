import Foundation

/// A Claude Code CLI command line, parsed with the CLI's own flag grammar (2.1.332; see
/// docs/claude-cli.md §2.1): which words are options, which take values, which are operands.
/// Two command lines that mean the same (`--model M` and `--model=M`, `--allowed-tools` and
/// `--allowedTools`, `--allowedTools a,b` and `--allowedTools a --allowedTools b`, any order)
/// parse to equal options, so they are compared by meaning, not by spelling.
///
/// Written by hand: the grammar is the CLI's (a commander-style parser in JavaScript), not a
/// Swift argument parser's, and must be reproduced word for word.
public struct ClaudeCommandLine: Sendable, Equatable {
    /// One option as given: its canonical name and value (nil for a boolean, or an optional
    /// value left out), and the words it took, as written.
    public struct Option: Sendable, Equatable {
        public var name: String
        public var value: String?
        public var words: [String]
    }

    public private(set) var options: [Option] = []
    /// Words that are not options: the `[prompt]` operand.
    public private(set) var operands: [String] = []
    /// Options the CLI does not know (it would refuse them: a cold run reproduces that).
    public private(set) var unknown: [String] = []

    /// Parses the arguments after the executable's name.
    public init(_ arguments: [String]) {
        var index = 0
        var optionsEnded = false
        while index < arguments.count {
            let word = arguments[index]
            index += 1
            if optionsEnded || word == "-" || !word.hasPrefix("-") {
                operands.append(word)
                continue
            }
            if word == "--" {
                optionsEnded = true
                continue
            }
            var name = word
            var inline: String?
            if word.hasPrefix("--"), let equals = word.firstIndex(of: "=") {
                name = String(word[..<equals])
                inline = String(word[word.index(after: equals)...])
            } else if !word.hasPrefix("--"), word.count > 2, Self.kinds[word] == nil {
                // `-nNAME` (a short flag with its value attached), `-pc` (short booleans).
                let short = String(word.prefix(2))
                let rest = String(word.dropFirst(2))
                if let kind = Self.kinds[short], kind != .boolean {
                    name = short
                    inline = rest
                } else if rest.allSatisfy({ Self.kinds["-\($0)"] == .boolean }), Self.kinds[short] == .boolean {
                    for flag in word.dropFirst() {
                        append("-\(flag)", value: nil, words: [word])
                    }
                    continue
                }
            }
            guard let kind = Self.kinds[name] else {
                unknown.append(word)
                continue
            }
            switch kind {
            case .boolean:
                if inline != nil {
                    unknown.append(word)  // `--flag=x` on a boolean: the CLI refuses it
                } else {
                    append(name, value: nil, words: [word])
                }
            case .value:
                if let inline {
                    append(name, value: inline, words: [word])
                } else if index < arguments.count {
                    // A required value takes the next word whatever it is ("", "-x").
                    append(name, value: arguments[index], words: [word, arguments[index]])
                    index += 1
                } else {
                    unknown.append(word)  // missing its value: the CLI refuses it
                }
            case .optional:
                if let inline {
                    append(name, value: inline, words: [word])
                } else if index < arguments.count, !arguments[index].hasPrefix("-") {
                    append(name, value: arguments[index], words: [word, arguments[index]])
                    index += 1
                } else {
                    append(name, value: nil, words: [word])
                }
            case .variadic:
                if let inline {
                    append(name, value: inline, words: [word])
                    continue
                }
                guard index < arguments.count else {
                    unknown.append(word)
                    continue
                }
                // The first value unconditionally, then words while they are not options.
                append(name, value: arguments[index], words: [word, arguments[index]])
                index += 1
                while index < arguments.count, !arguments[index].hasPrefix("-") {
                    append(name, value: arguments[index], words: [arguments[index]])
                    index += 1
                }
            }
        }
    }

    private mutating func append(_ name: String, value: String?, words: [String]) {
        options.append(Option(name: Self.aliases[name] ?? name, value: value, words: words))
    }

    /// The values given for `name` (canonical), in order.
    public func values(_ name: String) -> [String] {
        options.filter { $0.name == name }.compactMap(\.value)
    }

    public func has(_ name: String) -> Bool {
        options.contains { $0.name == name }
    }

    /// The last value given for `name`, the one the CLI uses.
    public func last(_ name: String) -> String? {
        values(name).last
    }

    // MARK: - The grammar

    enum Kind: Sendable { case boolean, value, optional, variadic }

    /// Other spellings of the same option.
    static let aliases: [String: String] = [
        "--allowed-tools": "--allowedTools", "--disallowed-tools": "--disallowedTools", "-r": "--resume", "-c": "--continue",
        "-p": "--print", "-d": "--debug", "-w": "--worktree", "-n": "--name", "-d2e": "--debug-to-stderr", "--bg": "--background",
        "--rc": "--remote-control", "-h": "--help", "-v": "--version", "-V": "--version",
    ]

    /// Every option of the CLI's main command, by kind (docs/claude-cli.md, Appendix A).
    static let kinds: [String: Kind] = {
        let booleans = """
            -d2e --debug-to-stderr --verbose -p --print --bare --safe-mode --init --init-only --maintenance --include-hook-events
            --include-partial-messages --forward-subagent-text --session-mirror --await-claim --await-initialize
            --dangerously-skip-permissions --allow-dangerously-skip-permissions --replay-user-messages --enable-auth-status
            --restricted --exclude-dynamic-system-prompt-sections -c --continue --fork-session --deep-link-origin
            --no-session-persistence --reply-on-resume --include-unsupported-models --allow-other-models
            --managed-settings-in-initialize --host-auth-is-org-sign-in --ide --desktop --strict-mcp-config
            --disable-slash-commands --chrome --no-chrome --tmux --enable-auto-mode --agents-view-if-allowed --bg --background
            --brief --ax-screen-reader --plan-mode-required --hold-repository-while-parked -h --help -v -V --version
            """
        let optionals = "-d --debug --prompt-suggestions -r --resume --from-pr -w --worktree --teleport --cloud --remote --remote-control --rc"
        let variadics = """
            --allowedTools --allowed-tools --tools --disallowedTools --disallowed-tools --mcp-config --betas --add-dir --file
            --channels --dangerously-load-development-channels
            """
        let values = """
            --debug-file --output-format --json-schema --input-format --thinking --thinking-display --max-thinking-tokens
            --max-turns --max-budget-usd --task-budget --permission-prompt-tool --permission-prompts --system-prompt
            --system-prompt-file --append-system-prompt --append-system-prompt-file --system-prompt-snapshot
            --append-subagent-system-prompt --append-subagent-system-prompt-file --plan-mode-instructions --permission-mode
            --inherit-permission-mode --watch-artifact --watch-artifact-no-autoreact --prefill --deep-link-repo
            --deep-link-last-fetch --prefill-b64 --deep-link-cwd-b64 --resume-session-at --resume-drops-turn --rewind-files
            --model --effort --fast-mode --agent --fallback-model --workload --settings --client-data-url --managed-settings
            --project-config-root --session-id -n --name --agents --setting-sources --plugin-dir --plugin-dir-no-mcp
            --plugin-url --advisor --autocompact --agent-id --agent-name --team-name --agent-color --parent-session-id
            --lead-verify-key --teammate-mode --agent-type --sdk-url --runner-declares --session-began-as-copy
            --initialize-fields --forward-home-settings --attach-serve --environment --pool --correlation-id --metadata --ref
            --on-branch --remote-control-session-name-prefix --exec -m --handle-uri --messaging-socket-path --proactivity
            --routine --project --hard-fail --bg-spare --preload
            """
        var kinds: [String: Kind] = [:]
        for (text, kind) in [(booleans, Kind.boolean), (optionals, .optional), (variadics, .variadic), (values, .value)] {
            for name in text.split(whereSeparator: { $0 == " " || $0 == "\n" }) { kinds[String(name)] = kind }
        }
        return kinds
    }()
}
