import ArgumentParser
import Foundation
import Logging
import NIOCore
import NIOHTTP1
import PrewarmClient
import PrewarmCore
import PrewarmServer

@main
struct Prewarm: AsyncParsableCommand {
    static func main() async {
        // CAP_SYS_NICE given as an ambient capability (systemd's AmbientCapabilities=) is the
        // daemon's, to give spares their priority back; the CLIs and their tools must not
        // inherit it. Capabilities are per thread: cleared before any other thread exists.
        StartupPriority.keepCapabilitiesFromChildren()
        await main(nil)
    }

    static let configuration = CommandConfiguration(
        commandName: "prewarm",
        abstract: "Keeps already-initialised agent CLI processes ready, one per turn.",
        subcommands: [Serve.self, Turn.self, Status.self, Top.self, Resize.self, Recycle.self, Stats.self, Advise.self, Size.self, Bench.self, SDK.self, Keeper.self]
    )
}

/// `--config` and `--socket`, taken by every subcommand.
struct CommonOptions: ParsableArguments {
    @Option(name: .long, help: "The configuration file (default: config/prewarm.toml if present, else the built-in defaults).")
    var config: String?

    @Option(name: .long, help: "The daemon's Unix socket (default: $PREWARM_SOCKET, the config's socket, $XDG_RUNTIME_DIR/prewarm.sock, /tmp/prewarm-$UID/prewarm.sock).")
    var socket: String?

    func loadConfiguration() throws -> Configuration {
        try Self.loadConfiguration(path: config)
    }

    /// The configuration, or exit 78 (EX_CONFIG) saying what is wrong with it.
    func loadOrFail() throws -> Configuration {
        do {
            return try loadConfiguration()
        } catch let error as ConfigError {
            throw ExitStatus.fail(78, "invalid configuration: \(error)")
        }
    }

    /// One request to the daemon; a failure to reach it exits 69, an error answer with the
    /// status `forHTTP` gives, and a one-line reason on stderr.
    func daemonRequest(_ method: HTTPMethod, _ path: String, body: ByteBuffer? = nil) async throws -> UnixHTTPClient.Response {
        let client = UnixHTTPClient(socketPath: try socketPath())
        let response: UnixHTTPClient.Response
        do {
            response = try await client.request(method, path, headers: body == nil ? [] : [("Content-Type", "application/json")], body: body)
        } catch {
            throw ExitStatus.fail(ExitStatus.unavailable, "\(error)")
        }
        guard response.status == 200 else {
            throw ExitStatus.fail(ExitStatus.forHTTP(response.status), "HTTP \(response.status): \(Turn.errorMessage(response.body))")
        }
        return response
    }

    /// `--config PATH`, else `config/prewarm.toml` in the working directory, else the defaults.
    static func loadConfiguration(path: String?) throws -> Configuration {
        let loader = ConfigurationLoader(executableDirectory: executableDirectory)
        return try loader.load(path: path)
    }

    /// The socket path; reads the configuration only when flag and environment say nothing.
    func socketPath() throws -> String {
        let environment = ProcessInfo.processInfo.environment
        if socket != nil || environment["PREWARM_SOCKET"] != nil {
            return SocketPath.resolve(flag: socket, environment: environment, configured: nil)
        }
        let configured = try? loadConfiguration().socket
        return SocketPath.resolve(flag: nil, environment: environment, configured: configured)
    }

    /// The directory of the running `prewarm` executable.
    static var executableDirectory: String? {
        (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")).map { ($0 as NSString).deletingLastPathComponent }
    }

    static var executablePath: String? {
        try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")
    }
}

/// sysexits(3) codes, as `prewarm turn` documents them.
enum ExitStatus {
    static let broken: Int32 = 1
    static let usage: Int32 = 64
    static let dataError: Int32 = 65
    static let unavailable: Int32 = 69
    static let tempFail: Int32 = 75
    static let noPermission: Int32 = 77

    /// Prints a one-line reason on stderr and exits.
    static func fail(_ code: Int32, _ message: String) -> ExitCode {
        FileHandle.standardError.write(Data(("prewarm: " + message + "\n").utf8))
        return ExitCode(code)
    }

    static func forHTTP(_ status: Int) -> Int32 {
        switch status {
        case 400, 413: dataError
        case 429: tempFail
        case 503: unavailable
        case 404: usage
        case 403: noPermission
        default: broken
        }
    }
}

func makeLogger(level: String?) -> Logger {
    let chosen = level ?? ProcessInfo.processInfo.environment["PREWARM_LOG_LEVEL"] ?? "info"
    LoggingSystem.bootstrap { label in
        var handler = QuotingLogHandler(StreamLogHandler.standardError(label: label))
        handler.logLevel = Logger.Level(rawValue: chosen) ?? .info
        return handler
    }
    return Logger(label: "prewarm")
}
