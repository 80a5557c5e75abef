import Foundation
import Testing

@testable import PrewarmCore

/// The matcher's properties, over command lines generated from the CLI's own option table
/// (ClaudeCommandLine.kinds), seeded:
///
/// (a) an edit that keeps the meaning (an alias, `--flag=v` for `--flag v`, options of
///     different names in another order, a list given in several words, white space between
///     JSON tokens, a boolean given twice) keeps the fingerprint and the resume key;
/// (b) an edit that changes it (a rule's text, the order of a list, the order of JSON keys,
///     an option's value, a host variable) changes the fingerprint and the resume key; a
///     claimable token changes the resume key (a fingerprint pool's spares are claimed with
///     the caller's token, so it is not part of the fingerprint).
///
/// A spare started for one command line is handed only to a run with the same fingerprint
/// (or resume key), so (b) is what keeps one caller's run off a process started with another
/// caller's rules; (a) is what keeps runs warm.
@Suite("Fingerprints: properties")
struct FingerprintPropertyTests {
    /// The host options: canonical names that are neither cold nor session options.
    static let hostOptions: [(name: String, kind: ClaudeCommandLine.Kind)] = ClaudeCommandLine.kinds
        .filter { name, _ in
            name.hasPrefix("--") && ClaudeCommandLine.aliases[name] == nil && RunShape.coldOptions[name] == nil
                && !RunShape.sessionOptions.contains(name) && name != "--include-partial-messages" && name != "--print"
        }
        .map { ($0.key, $0.value) }
        .sorted { $0.name < $1.name }

    /// A canonical name's other spellings.
    static let spellings: [String: [String]] = Dictionary(grouping: ClaudeCommandLine.aliases.filter { $0.key.hasPrefix("--") }, by: \.value)
        .mapValues { $0.map(\.key) }

    struct Given {
        var name: String
        var kind: ClaudeCommandLine.Kind
        var values: [String]
    }

    static let rules = ["Read", "Edit", "Bash(git push:*)", "Bash(rm -rf:*)", "WebFetch(domain:example.com)", "mcp__x__y", "Bash(npm run test)"]

    static func value(for name: String, _ random: inout SeededGenerator) -> [String] {
        if RunShape.listOptions.contains(name) {
            var chosen: [String] = []
            for _ in 0..<(1 + Int(random.next() % 3)) {
                let rule = rules[Int(random.next() % UInt64(rules.count))]
                if !chosen.contains(rule) { chosen.append(rule) }
            }
            return chosen
        }
        if RunShape.jsonOptions.contains(name) {
            return [#"{"a":{"k":"v\#(random.next() % 100)","n":[1,2]},"b":"x y"}"#]
        }
        return ["v\(random.next() % 1000)"]
    }

    static func generate(_ random: inout SeededGenerator) -> [Given] {
        var given: [Given] = []
        var names = Set<String>()
        for _ in 0..<(1 + Int(random.next() % 6)) {
            let (name, kind) = hostOptions[Int(random.next() % UInt64(hostOptions.count))]
            guard names.insert(name).inserted else { continue }
            given.append(Given(name: name, kind: kind, values: kind == .boolean ? [] : value(for: name, &random)))
        }
        return given
    }

    /// The words of `given`, in a plain spelling.
    static func words(_ given: [Given]) -> [String] {
        given.flatMap { option -> [String] in
            switch option.kind {
            case .boolean: [option.name]
            case .variadic where RunShape.listOptions.contains(option.name): [option.name, option.values.joined(separator: ",")]
            default: [option.name] + option.values
            }
        }
    }

    /// Another spelling of the same meaning.
    static func respelled(_ given: [Given], _ random: inout SeededGenerator) -> [String] {
        var parts: [[String]] = given.map { option in
            var name = option.name
            if let other = spellings[name], random.next() % 2 == 0 { name = other[Int(random.next() % UInt64(other.count))] }
            switch option.kind {
            case .boolean:
                return random.next() % 3 == 0 ? [name, name] : [name]
            case .variadic where RunShape.listOptions.contains(option.name):
                switch random.next() % 3 {
                case 0: return [name] + option.values  // one word each
                case 1: return option.values.flatMap { ["\(name)=\($0)"] }  // one option each
                default: return [name, option.values.joined(separator: random.next() % 2 == 0 ? ", " : " ")]
                }
            case .variadic, .value, .optional:
                var values = option.values
                if RunShape.jsonOptions.contains(option.name) {
                    // White space between tokens (the strings hold no ':' or ',').
                    values = values.map { " " + $0.replacingOccurrences(of: ":", with: " : ").replacingOccurrences(of: ",", with: ",\n ") + "\t" }
                }
                if values.count == 1, random.next() % 2 == 0 { return ["\(name)=\(values[0])"] }
                return [name] + values
            }
        }
        parts.shuffle(using: &random)  // different names: order is not meaning
        return parts.flatMap { $0 }
    }

    static let executable = "/opt/claude"
    static let env = ["ANTHROPIC_API_KEY": "k", "CLAUDE_CONFIG_DIR": "/c", "PATH": "/bin", "CLAUDE_CODE_OAUTH_TOKEN": "t1"]

    static func fingerprint(_ words: [String], env: [String: String] = env) -> String {
        RunMatcher.fingerprint(RunShape(arguments: words, cwd: "/w", env: env), env: env, executable: executable)
    }

    static func resumeKey(_ words: [String], env: [String: String] = env) -> ResumeKey? {
        ResumeKey(run: RunDescription(argv: words + ["--resume", "S"], cwd: "/w", env: env), executable: executable)
    }

    /// (a): 2000 command lines, each respelled three ways.
    @Test(arguments: 0..<10)
    func spellingsKeepTheFingerprint(seed: Int) {
        var random = SeededGenerator(seed: UInt64(seed) &* 0x9E37_79B9 &+ 11)
        var failures: [String] = []
        for _ in 0..<200 {
            let given = Self.generate(&random)
            let plain = Self.words(given)
            #expect(ClaudeCommandLine(plain).unknown.isEmpty && ClaudeCommandLine(plain).operands.isEmpty, "\(plain)")
            for _ in 0..<3 {
                let other = Self.respelled(given, &random)
                if Self.fingerprint(other) != Self.fingerprint(plain) || Self.resumeKey(other) != Self.resumeKey(plain) {
                    failures.append("\(plain) ~ \(other)")
                }
            }
            // What the daemon ignores of the environment, and a token (claimed, not host).
            var env = Self.env
            env["PATH"] = "/usr/bin"
            env["TERM"] = "dumb"
            env["CLAUDE_CODE_OAUTH_TOKEN"] = "t2"
            if Self.fingerprint(plain, env: env) != Self.fingerprint(plain) { failures.append("env: \(plain)") }
        }
        #expect(failures.count == 0, "seed \(seed): \(failures.prefix(3))")
    }

    /// (b): 2000 command lines, each changed in meaning one way.
    @Test(arguments: 0..<10)
    func meaningsChangeTheFingerprint(seed: Int) {
        var random = SeededGenerator(seed: UInt64(seed) &* 0x85EB_CA6B &+ 7)
        var failures: [String] = []
        var tried = 0
        for _ in 0..<200 {
            var given = Self.generate(&random)
            let plain = Self.words(given)
            var env = Self.env
            let candidates = given.indices.filter { given[$0].kind != .boolean }
            switch random.next() % 5 {
            case 0 where !candidates.isEmpty:
                // A value: a rule's text, a JSON string, a plain value.
                let index = candidates[Int(random.next() % UInt64(candidates.count))]
                let position = Int(random.next() % UInt64(given[index].values.count))
                var value = given[index].values[position]
                if let open = value.firstIndex(of: "(") {
                    value.insert("x", at: value.index(after: open))
                } else if RunShape.jsonOptions.contains(given[index].name) {
                    value = value.replacingOccurrences(of: "x y", with: "x  y")
                } else {
                    value += "x"
                }
                given[index].values[position] = value
            case 1 where given.contains(where: { RunShape.listOptions.contains($0.name) && Set($0.values).count > 1 }):
                // A list's order.
                let index = given.firstIndex { RunShape.listOptions.contains($0.name) && Set($0.values).count > 1 }!
                given[index].values.reverse()
            case 2 where given.contains(where: { RunShape.jsonOptions.contains($0.name) }):
                // JSON keys in another order.
                let index = given.firstIndex { RunShape.jsonOptions.contains($0.name) }!
                given[index].values = given[index].values.map { _ in #"{"b":"x y","a":{"n":[1,2],"k":"v"}}"# }
            case 3:
                env["ANTHROPIC_MODEL"] = "m\(random.next() % 10)"
            default:
                // An option more.
                let (name, kind) = Self.hostOptions[Int(random.next() % UInt64(Self.hostOptions.count))]
                guard !given.contains(where: { $0.name == name }) else { continue }
                given.append(Given(name: name, kind: kind, values: kind == .boolean ? [] : Self.value(for: name, &random)))
            }
            let changed = Self.words(given)
            guard changed != plain || env != Self.env else { continue }
            tried += 1
            if Self.fingerprint(changed, env: env) == Self.fingerprint(plain) || Self.resumeKey(changed, env: env) == Self.resumeKey(plain) {
                failures.append("\(plain) ~ \(changed) \(env == Self.env ? "" : "(env)")")
            }
        }
        // A token changes the resume key (the spare holds it), never the fingerprint.
        var token = Self.env
        token["CLAUDE_CODE_OAUTH_TOKEN"] = "another"
        #expect(Self.resumeKey(["--verbose"], env: token) != Self.resumeKey(["--verbose"]))
        #expect(tried > 150, "seed \(seed): only \(tried) edits tried")
        #expect(failures.count == 0, "seed \(seed): \(failures.prefix(3))")
    }
}
