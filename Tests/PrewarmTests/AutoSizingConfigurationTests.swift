import Foundation
import Testing

@testable import PrewarmCore

/// `spares = "auto"` and its keys, as the configuration file gives them.
@Suite("Auto sizing: configuration")
struct AutoSizingConfigurationTests {
    let loader = ConfigurationLoader(executableDirectory: "/nonexistent", environment: ["PATH": "/usr/bin:/bin"], cpus: 2)

    func parse(_ keys: String) throws(ConfigError) -> PoolConfig {
        try loader.parse("[[pool]]\nname = \"p\"\ncommand = \"x\"\n\(keys)\n[pool.turn]\nend = \"r\"\n", origin: "/etc/prewarm.toml", baseDirectory: "/etc").pools[0]
    }

    /// The defaults the README lists: min_spares 1, no max_spares (memory and max_processes
    /// bound it), target_miss 0.01, a 300 s window replayed every 5 s, a 60 s hold; without
    /// max_processes, 64.
    @Test func autoDefaults() throws {
        let pool = try parse(#"spares = "auto""#)
        #expect(pool.spares == 1)
        #expect(pool.autoSizing == AutoSizing(maxSpares: nil, targetMiss: 0.01, window: .seconds(300), every: .seconds(5), hold: .seconds(60)))
        #expect(pool.maxProcesses == 64)
        #expect(pool.machineSettings.autoSizing == pool.autoSizing)
        #expect(try parse("spares = 3").autoSizing == nil)
    }

    /// Every key read; max_processes follows max_spares as it follows spares.
    @Test func autoKeys() throws {
        let pool = try parse(
            """
            spares = "auto"
            min_spares = 2
            max_spares = 20
            target_miss = 0.05
            auto_window_s = 120
            auto_every_s = 2.5
            auto_hold_s = 30
            """
        )
        #expect(pool.spares == 2)
        #expect(pool.autoSizing == AutoSizing(maxSpares: 20, targetMiss: 0.05, window: .seconds(120), every: .milliseconds(2500), hold: .seconds(30)))
        #expect(pool.maxProcesses == 28)
    }

    /// Bad values are refused with the file, the key and what is expected.
    @Test(arguments: [
        (#"spares = "autox""#, "pool.p.spares", #"expected an integer from 0 to 10000 or "auto", found "autox""#),
        ("spares = 2.5", "pool.p.spares", #"or "auto""#),
        ("spares = 3\nmin_spares = 1", "pool.p.min_spares", #"set spares = "auto""#),
        ("spares = 3\ntarget_miss = 0.1", "pool.p.target_miss", "applies only to a pool that sizes itself"),
        (#"spares = "auto""# + "\nmin_spares = 5\nmax_spares = 3", "pool.p.min_spares", "min_spares (5) is above max_spares (3)"),
        (#"spares = "auto""# + "\ntarget_miss = 0", "pool.p.target_miss", "above 0 and below 1"),
        (#"spares = "auto""# + "\ntarget_miss = 1.5", "pool.p.target_miss", "from 0 to 1"),
        (#"spares = "auto""# + "\ntarget_miss = \"1%\"", "pool.p.target_miss", "expected a number"),
        (#"spares = "auto""# + "\nauto_every_s = 60\nauto_window_s = 30", "pool.p.auto_every_s", "above auto_window_s"),
        (#"spares = "auto""# + "\nauto_window_s = 0", "pool.p.auto_window_s", "from 1 to 86400"),
        (#"spares = "auto""# + "\nmax_spares = 40\nmax_processes = 30", "pool.p.max_spares", "above max_processes (30)"),
        (#"spares = "auto""# + "\nmin_spares = 40\nmax_processes = 30", "pool.p.max_processes", "below min_spares (40)"),
        (#"spares = "auto""# + "\nmin_spare = 2", "pool.p.min_spare", "unknown key"),
    ])
    func badAutoValueRefused(keys: String, key: String, expected: String) {
        #expect {
            try parse(keys)
        } throws: { error in
            let error = error as! ConfigError
            return error.file == "/etc/prewarm.toml" && error.key == key && error.message.contains(expected)
        }
    }
}
