import ArgumentParser
import Dispatch
import Foundation
import PrewarmClient
import PrewarmCore
import PrewarmServer

#if canImport(Glibc)
import Glibc
#endif

/// `prewarm top`: every pool, refreshed every second from `GET /v1/pools` and
/// `GET /v1/memory`, drawn with ANSI escapes on the terminal's alternate screen.
struct Top: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "A live view of the pools, refreshed every second (q or Ctrl-C quits).",
        discussion: """
            Per pool: idle spares, start-ups, busy processes, waiting turns, spares kept against \
            the target, the hit ratio (turns served warm) over the last minute and since the \
            daemon started, turns served and refused in the last minute, the start-up p50, and \
            the memory the pool holds of the budget; above them, the memory limit, usage, budget, \
            what is charged against it, pressure and OOM kills. The last-minute figures are the \
            differences between the daemon's counters as top has seen them (over less than a \
            minute until top has run that long). When stdout is not a terminal, one snapshot is \
            printed. Exit 69 when no daemon answers.
            """
    )

    @OptionGroup var options: CommonOptions

    static let refresh: Duration = .seconds(1)

    func run() async throws {
        let socket = try options.socketPath()
        let client = UnixHTTPClient(socketPath: socket)
        let first: TopSample
        do {
            first = try await TopSample.fetch(client)
        } catch {
            throw ExitStatus.fail(ExitStatus.unavailable, "\(error)")
        }
        guard isatty(STDOUT_FILENO) == 1 else {
            var window = TurnWindow()
            window.record(first)
            print(TopScreen(socket: socket, sample: first, window: window, error: nil, live: false).lines().joined(separator: "\n"))
            return
        }
        await watch(client: client, socket: socket, first: first)
    }

    /// Redraws on every sample until q, Ctrl-C, SIGTERM or SIGHUP; the terminal is given
    /// back as it was.
    private func watch(client: UnixHTTPClient, socket: String, first: TopSample) async {
        let (events, continuation) = AsyncStream.makeStream(of: TopEvent.self)
        let terminal = TerminalScreen()
        terminal.enter()
        defer { terminal.leave() }

        var sources: [any DispatchSourceProtocol] = []
        for number in [SIGINT, SIGTERM, SIGHUP] {
            signal(number, SIG_IGN)
            let source = DispatchSource.makeSignalSource(signal: number, queue: .global())
            source.setEventHandler { continuation.yield(.quit) }
            sources.append(source)
        }
        let resize = DispatchSource.makeSignalSource(signal: SIGWINCH, queue: .global())
        signal(SIGWINCH, SIG_IGN)
        resize.setEventHandler { continuation.yield(.resize) }
        sources.append(resize)
        if terminal.readsKeys {
            let keys = DispatchSource.makeReadSource(fileDescriptor: STDIN_FILENO, queue: .global())
            keys.setEventHandler {
                var byte: UInt8 = 0
                let count = read(STDIN_FILENO, &byte, 1)
                if count <= 0 || byte == UInt8(ascii: "q") || byte == UInt8(ascii: "Q") { continuation.yield(.quit) }
            }
            sources.append(keys)
        }
        sources.forEach { $0.resume() }
        defer { sources.forEach { $0.cancel() } }

        let sampler = Task {
            while !Task.isCancelled {
                try? await Task.sleep(for: Self.refresh)
                do {
                    continuation.yield(.sample(try await TopSample.fetch(client)))
                } catch {
                    continuation.yield(.failed("\(error)"))
                }
            }
        }
        defer { sampler.cancel() }

        var window = TurnWindow()
        window.record(first)
        var last = first
        var error: String?
        terminal.draw(TopScreen(socket: socket, sample: last, window: window, error: nil, live: true).lines())
        for await event in events {
            switch event {
            case .quit:
                return
            case .sample(let sample):
                window.record(sample)
                last = sample
                error = nil
            case .failed(let message):
                error = message
            case .resize:
                break
            }
            terminal.draw(TopScreen(socket: socket, sample: last, window: window, error: error, live: true).lines())
        }
    }
}

enum TopEvent: Sendable {
    case sample(TopSample)
    case failed(String)
    case resize
    case quit
}

/// One reading of the daemon: its pools and its memory.
struct TopSample: Sendable {
    var time: ContinuousClock.Instant
    var date: Date
    var pools: [PoolStatus]
    var memory: MemoryStatus

    struct Refused: Error, CustomStringConvertible {
        var description: String
    }

    static func fetch(_ client: UnixHTTPClient) async throws -> TopSample {
        func get<T: Decodable>(_ path: String, _ type: T.Type) async throws -> T {
            let response = try await client.request(.GET, path)
            guard response.status == 200 else { throw Refused(description: "GET \(path): HTTP \(response.status): \(response.bodyString)") }
            return try JSONDecoder().decode(type, from: Data(response.body.readableBytesView))
        }
        let pools = try await get("/v1/pools", PoolList.self).pools
        let memory = try await get("/v1/memory", MemoryStatus.self)
        return TopSample(time: .now, date: Date(), pools: pools, memory: memory)
    }
}

/// Each pool's counters over the last minute, from the samples top has taken: the figures
/// between the oldest sample of the minute and the newest.
struct TurnWindow {
    struct Counts {
        var time: ContinuousClock.Instant
        var served: Int
        var warm: Int
        var rejected: Int
    }

    static let span: Duration = .seconds(60)
    private var samples: [String: [Counts]] = [:]

    mutating func record(_ sample: TopSample) {
        var kept: [String: [Counts]] = [:]
        for pool in sample.pools {
            let counts = Counts(time: sample.time, served: pool.served, warm: pool.warm, rejected: pool.rejected)
            var history = samples[pool.name] ?? []
            // Counters that went back: the pool (or the daemon) was made anew.
            if let newest = history.last, counts.served < newest.served || counts.rejected < newest.rejected { history = [] }
            history.append(counts)
            // Keep the newest sample at least a minute old, as the start of the minute.
            while history.count > 2, sample.time - history[1].time >= Self.span { history.removeFirst() }
            kept[pool.name] = history
        }
        samples = kept
    }

    /// Served, warm and refused turns in the last minute, or nil before a second sample.
    func lastMinute(_ pool: String) -> (served: Int, warm: Int, rejected: Int)? {
        guard let history = samples[pool], let oldest = history.first, let newest = history.last, history.count > 1 else { return nil }
        return (newest.served - oldest.served, newest.warm - oldest.warm, newest.rejected - oldest.rejected)
    }
}

/// The text of one frame.
struct TopScreen {
    var socket: String
    var sample: TopSample
    var window: TurnWindow
    var error: String?
    var live: Bool

    func lines() -> [String] {
        let clock = DateFormatter()
        clock.dateFormat = "HH:mm:ss"
        var lines = [
            "prewarm top  \(socket)  \(clock.string(from: sample.date))" + (live ? "  every 1 s, q or Ctrl-C quits" : "")
        ]
        if let error { lines.append("no answer from the daemon (showing the last figures): \(error)") }
        lines.append(contentsOf: memoryLines(sample.memory))
        lines.append("")
        var rows = [
            ["POOL", "IDLE", "STARTING", "BUSY", "WAITING", "SPARES", "HIT 1M", "HIT ALL", "TURNS 1M", "REFUSED 1M", "SPAWN P50", "MEMORY", "STATE"]
        ]
        let memory = Dictionary(sample.memory.pools.map { ($0.name, $0) }, uniquingKeysWith: { first, _ in first })
        for pool in sample.pools {
            let minute = window.lastMinute(pool.name)
            let charged = memory[pool.name]?.charged
            rows.append([
                pool.name, "\(pool.idle)", "\(pool.starting)", "\(pool.busy)", "\(pool.waiting)",
                "\(pool.effectiveSpares)/" + (pool.auto == nil ? "\(pool.targetSpares)" : "auto"),
                minute.flatMap { $0.served > 0 ? percent($0.warm, of: $0.served) : nil } ?? "-",
                pool.served > 0 ? percent(pool.warm, of: pool.served) : "-",
                minute.map { "\($0.served)" } ?? "-",
                minute.map { "\($0.rejected)" } ?? "-",
                pool.spawnMs.p50.map { "\($0) ms" } ?? "-",
                charged.map { "\(mib($0))" + (sample.memory.budget > 0 ? " (\(percent($0, of: sample.memory.budget)))" : "") } ?? "-",
                pool.failing ? "FAILING: \(pool.lastError ?? "start-ups fail")" : "ok",
            ])
        }
        lines.append(contentsOf: Status.align(rows).split(separator: "\n", omittingEmptySubsequences: false).map(String.init))
        if sample.pools.isEmpty { lines.append("(no pools)") }
        return lines
    }

    private func memoryLines(_ memory: MemoryStatus) -> [String] {
        var usage = "memory    limit \(mib(memory.limit)) (\(memory.limitSource)), usage \(memory.usage.map(mib) ?? "-")"
        usage += ", budget \(mib(memory.budget)), charged \(mib(memory.charged))"
        if memory.budget > 0 { usage += " (\(percent(memory.charged, of: memory.budget)))" }
        var pressure = "pressure  " + (memory.pressure ? "YES: start-ups stopped, idle spares shed" : "no")
        if let psi = memory.pressureSomeAvg10 { pressure += String(format: " (psi some avg10 %.2f)", psi) }
        pressure += ", OOM kills \(memory.oomKills)" + (memory.enforce ? "" : " (memory not enforced)")
        return [usage, pressure]
    }

    private func mib(_ bytes: Int) -> String { "\(bytes >> 20) MiB" }

    private func percent(_ part: Int, of whole: Int) -> String { String(format: "%.0f%%", Double(part) * 100 / Double(whole)) }
}

/// The terminal while top runs: the alternate screen, no cursor, keys read one by one with
/// no echo; all of it undone by `leave()`.
final class TerminalScreen {
    private var saved = termios()
    let readsKeys: Bool

    init() {
        readsKeys = isatty(STDIN_FILENO) == 1 && tcgetattr(STDIN_FILENO, &saved) == 0
    }

    func enter() {
        if readsKeys {
            var raw = saved
            raw.c_lflag &= ~tcflag_t(ICANON | ECHO)
            withUnsafeMutableBytes(of: &raw.c_cc) { characters in
                characters[Int(VMIN)] = 1
                characters[Int(VTIME)] = 0
            }
            tcsetattr(STDIN_FILENO, TCSANOW, &raw)
        }
        write("\u{1B}[?1049h\u{1B}[?25l")
    }

    func leave() {
        write("\u{1B}[?25h\u{1B}[?1049l")
        if readsKeys { tcsetattr(STDIN_FILENO, TCSANOW, &saved) }
    }

    /// One frame: from the top left, each line cut to the terminal's width and cleared to
    /// its end, then everything below cleared.
    func draw(_ lines: [String]) {
        var size = winsize()
        let columns = ioctl(STDOUT_FILENO, UInt(TIOCGWINSZ), &size) == 0 && size.ws_col > 0 ? Int(size.ws_col) : 200
        let rows = size.ws_row > 0 ? Int(size.ws_row) : lines.count
        let shown = lines.prefix(rows).map { String($0.prefix(columns)) + "\u{1B}[K" }
        write("\u{1B}[H" + shown.joined(separator: "\r\n") + "\u{1B}[J")
    }

    private func write(_ text: String) {
        FileHandle.standardOutput.write(Data(text.utf8))
    }
}
