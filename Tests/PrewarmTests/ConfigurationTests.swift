import Foundation
import Testing

@testable import PrewarmCore

@Suite("Configuration")
struct ConfigurationTests {
    let loader = ConfigurationLoader(executableDirectory: "/nonexistent", environment: ["PATH": "/usr/bin:/bin"])

    static var repositoryRoot: String {
        URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent().path
    }

    /// The built-in defaults are config/prewarm.toml, byte for byte.
    @Test func builtInDefaultsEqualTheFile() throws {
        let file = try String(contentsOfFile: Self.repositoryRoot + "/config/prewarm.toml", encoding: .utf8)
        #expect(file == DefaultConfiguration.toml)
        let config = try loader.parse(DefaultConfiguration.toml, origin: "built-in", baseDirectory: "/tmp")
        #expect(config.pools.map(\.name) == ["demo"])
        #expect(config.pools[0].spares == 2)
        #expect(config.pools[0].maxProcesses == 10)
        #expect(config.pools[0].ready.expect == #""type":"control_response""#)
    }

    func parse(_ text: String) throws(ConfigError) -> Configuration {
        try loader.parse(text, origin: "/etc/prewarm.toml", baseDirectory: "/etc")
    }

    /// Defaults of a minimal pool are those the README lists.
    @Test func poolDefaults() throws {
        let config = try parse(
            """
            [[pool]]
            name = "p"
            command = "./bin/agent"
            [pool.turn]
            end = "result"
            """
        )
        let pool = config.pools[0]
        #expect(pool.executable == "/etc/bin/agent")  // relative to the file's directory
        #expect(pool.spares == 2 && pool.maxProcesses == 10 && pool.maxStarting == 1)
        #expect(pool.whenEmpty == .wait && pool.waitTimeout == .milliseconds(10000) && pool.maxWaiting == 64)
        #expect(pool.turnTimeout == .seconds(600) && pool.maxIdle == .seconds(3600) && pool.maxRequestBytes == 1_048_576)
        #expect(pool.ready.timeout == .seconds(30) && pool.turn.closeStdin == false)
        #expect(config.drainTimeout == .seconds(30) && config.allowedUIDs.isEmpty)
    }

    /// Unknown keys are refused, naming the file and the key.
    @Test func unknownKeyRefused() {
        #expect {
            try parse(
                """
                [[pool]]
                name = "p"
                command = "x"
                sparez = 3
                """
            )
        } throws: { error in
            let error = error as! ConfigError
            return error.file == "/etc/prewarm.toml" && error.key == "pool.p.sparez" && error.message.contains("unknown key")
        }
    }

    /// Bad values are refused with what is expected.
    @Test(arguments: [
        ("spares = -1", "pool.p.spares", "from 0"),
        ("spares = \"two\"", "pool.p.spares", "expected an integer"),
        ("when_empty = \"maybe\"", "pool.p.when_empty", "\"start\", \"wait\" or \"reject\""),
        ("max_processes = 1\nspares = 3", "pool.p.max_processes", "below spares"),
    ])
    func badValueRefused(line: String, key: String, expected: String) {
        let text = "[[pool]]\nname = \"p\"\ncommand = \"x\"\n\(line)\n[pool.turn]\nend = \"r\"\n"
        #expect {
            try parse(text)
        } throws: { error in
            let error = error as! ConfigError
            return error.key == key && error.message.contains(expected)
        }
    }

    /// Broken TOML is refused with its line.
    @Test func brokenTOML() {
        #expect {
            try parse("[[pool]\nname = ")
        } throws: { error in
            (error as! ConfigError).message.contains("line")
        }
    }

    /// A pool needs a way to end its turns.
    @Test func turnEndRequired() {
        #expect(throws: ConfigError.self) {
            try parse("[[pool]]\nname = \"p\"\ncommand = \"x\"\n")
        }
    }
}
