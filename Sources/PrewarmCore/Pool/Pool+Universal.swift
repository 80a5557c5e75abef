#if canImport(Glibc)
import Glibc
#endif
import NIOPosix

/// Universal spares at run time (the decisions are PoolStateMachine+Universal's): each one's
/// socket, and its claim with the settings of the turn it is handed to.
extension Pool {
    /// The settings a universal spare starts with: the pool's executable with `--bg-spare` and
    /// its socket, its token in the environment, in its socket's 0700 directory, killed when
    /// retired unused.
    static func universalLaunch(_ state: inout State, spare: SpareID) throws(PrewarmError) -> PoolConfig {
        let endpoint = try UniversalSpare.makeEndpoint(root: state.config.universalRoot)
        state.universals[spare] = endpoint
        var config = state.config
        config.args = ["--bg-spare", endpoint.socket]
        config.env[UniversalSpare.authVariable] = endpoint.token
        config.cwd = endpoint.directory
        config.ready = PoolConfig.Readiness(send: nil, expect: nil, timeout: config.ready.timeout)
        config.retireAtOnce = true
        return config
    }

    /// Whether a turn started with `config` may take a universal spare: the pool keeps them,
    /// the turn has its own directory, and its environment can be sent as it is.
    static func universalServes(_ config: PoolConfig, environment: [String: String]) -> Bool {
        config.universalSupported && config.universalSpares > 0 && config.cwd != nil
            && UniversalSpare.accepts(environment: config.childEnvironment(from: environment))
    }

    /// Sends a universal spare the turn's command line, directory and environment (what a
    /// process started for the turn would get); nil when it took them.
    func claimUniversal(_ endpoint: UniversalSpare.Endpoint, pid: pid_t, config: PoolConfig) async -> String? {
        let env = config.childEnvironment(from: environment)
        let work: @Sendable () -> String? = {
            do throws(UniversalSpare.ClaimFailure) {
                try UniversalSpare.claim(endpoint, pid: pid, cwd: config.cwd ?? "/", env: env, argv: config.args)
                return nil
            } catch {
                return error.description
            }
        }
        // Blocking socket calls, for milliseconds: on NIO's thread pool, not the cooperative one.
        do {
            return try await NIOThreadPool.singleton.runIfActive(work)
        } catch {
            return work()  // the thread pool is shutting down
        }
    }
}
