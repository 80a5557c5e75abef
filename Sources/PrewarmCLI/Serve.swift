import ArgumentParser
import Foundation
import PrewarmCore
import PrewarmServer

struct Serve: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Run the daemon.")

    @OptionGroup var options: CommonOptions

    @Option(name: .long, help: "Log level: trace, debug, info, notice, warning, error, critical (default: $PREWARM_LOG_LEVEL or info).")
    var logLevel: String?

    func run() async throws {
        let configuration = try options.loadOrFail()
        let socket = SocketPath.resolve(flag: options.socket, environment: ProcessInfo.processInfo.environment, configured: configuration.socket)
        let logger = makeLogger(level: logLevel)
        logger.info("starting", metadata: ["config": "\(configuration.origin)", "socket.path": "\(socket)"])
        let path = options.config
        let daemon = Daemon(
            configuration: configuration,
            socketPath: socket,
            keeperExecutable: CommonOptions.executablePath,
            reload: { try CommonOptions.loadConfiguration(path: path) },
            bootstrapMetrics: true,
            logger: logger
        )
        do {
            try await daemon.run()
        } catch let error as PrewarmError where error.code == .unsafePath {
            // A directory another user could change: the configuration's to fix, like a bad file.
            throw ExitStatus.fail(78, error.message)
        } catch let error as PrewarmError {
            throw ExitStatus.fail(ExitStatus.unavailable, error.message)
        }
    }
}

/// The process-group keeper (internal: started by `serve`).
struct Keeper: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Kill the daemon's process groups when it dies (started by serve).", shouldDisplay: false)

    @OptionGroup var options: CommonOptions

    func run() throws {
        ProcessGroupKeeper.runKeeper()
    }
}
