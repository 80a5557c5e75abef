import Foundation
import Testing

@testable import PrewarmCore

@Suite("Configuration")
struct ConfigurationTests {
    let loader = ConfigurationLoader(executableDirectory: "/nonexistent", environment: ["PATH": "/usr/bin:/bin"], cpus: 2)

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
        #expect(pool.spareBytes == 300 << 20 && pool.turnBytes == 500 << 20)
        #expect(config.memory == MemoryConfig(reserve: 256 << 20, highWatermark: 0.9, lowWatermark: 0.8, limit: nil, enforce: true))
    }

    /// `[memory]` and the per-pool estimates; max_starting defaults to half the CPUs.
    @Test func memorySettings() throws {
        let eightCPUs = ConfigurationLoader(executableDirectory: nil, environment: [:], cpus: 8)
        let config = try eightCPUs.parse(
            """
            [memory]
            reserve_mib = 128
            high_watermark = 0.95
            low_watermark = 0.85
            limit_mib = 2048
            enforce = false
            [[pool]]
            name = "p"
            command = "/bin/x"
            spare_mib = 200
            turn_mib = 400
            [pool.turn]
            end = "r"
            """,
            origin: "t", baseDirectory: "/"
        )
        #expect(config.memory == MemoryConfig(reserve: 128 << 20, highWatermark: 0.95, lowWatermark: 0.85, limit: 2048 << 20, enforce: false))
        #expect(config.pools[0].spareBytes == 200 << 20 && config.pools[0].turnBytes == 400 << 20)
        #expect(config.pools[0].maxStarting == 4)
    }

    /// Bad `[memory]` values are refused with what is expected.
    @Test(arguments: [
        ("high_watermark = 1.5", "memory.high_watermark", "at most 1"),
        ("low_watermark = 0.95", "memory.low_watermark", "below high_watermark"),
        ("reserve_mib = -1", "memory.reserve_mib", "from 0"),
        ("limitmib = 3", "memory.limitmib", "unknown key"),
    ])
    func badMemoryValueRefused(line: String, key: String, expected: String) {
        let text = "[memory]\n\(line)\n[[pool]]\nname = \"p\"\ncommand = \"x\"\n[pool.turn]\nend = \"r\"\n"
        #expect {
            try parse(text)
        } throws: { error in
            let error = error as! ConfigError
            return error.key == key && error.message.contains(expected)
        }
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
