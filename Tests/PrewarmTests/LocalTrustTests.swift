import Foundation
import Logging
import NIOCore
import PrewarmClient
import Testing

@testable import PrewarmCore
@testable import PrewarmServer

#if canImport(Glibc)
import Glibc
#endif

/// Another local user, played by a `setpriv` child of the (root) test run: what it may try
/// against the daemon, the drop-in and the spares. README.md, "Trust model", names these tests.
enum Stranger {
    /// The uid and gid other users are played by.
    static let uid: UInt32 = 65534
    static let setpriv = ExternalTool.onPath("setpriv")
    /// Debian's python3, which every uid may run (the test run's own may live under /root).
    static let python = FileManager.default.isExecutableFile(atPath: "/usr/bin/python3") ? "/usr/bin/python3" : nil
    static let available = getuid() == 0 && setpriv != nil && python != nil
    static let missing = "needs root, setpriv (util-linux) and /usr/bin/python3, to play another local user"

    /// `arguments` run as the stranger.
    static func command(_ arguments: [String]) -> [String] {
        ["--reuid=\(uid)", "--regid=\(uid)", "--clear-groups", "--"] + arguments
    }

    /// A directory every user may read and enter, owned by root (the stranger's scripts).
    static func sharedDirectory() throws -> String {
        let path = try TestDaemon.makeTemporaryDirectory()
        chmod(path, 0o755)
        return path
    }

    /// A directory like /tmp: root's, sticky, writable by all (where a stranger can make
    /// things first).
    static func stickyDirectory() throws -> String {
        let path = try TestDaemon.makeTemporaryDirectory()
        chmod(path, 0o1777)
        return path
    }

    /// A Python script of the stranger's, started as the stranger; it says "ready" on stdout
    /// once it is set (its socket listens); returns the process.
    static func start(_ script: String, in directory: String, arguments: [String]) throws -> (Process, FileHandle) {
        let path = directory + "/stranger-\(UUID().uuidString.prefix(6)).py"
        try script.write(toFile: path, atomically: true, encoding: .utf8)
        chmod(path, 0o644)
        let process = Process()
        process.executableURL = URL(fileURLWithPath: setpriv!)
        process.arguments = command([python!, path] + arguments)
        let output = Pipe()
        process.standardOutput = output
        process.standardError = FileHandle.nullDevice
        try process.run()
        return (process, output.fileHandleForReading)
    }

    /// Runs a script of the stranger's to its end.
    static func run(_ script: String, in directory: String, arguments: [String]) throws -> CommandResult {
        let path = directory + "/stranger-\(UUID().uuidString.prefix(6)).py"
        try script.write(toFile: path, atomically: true, encoding: .utf8)
        chmod(path, 0o644)
        return try runCommand(setpriv!, command([python!, path] + arguments))
    }

    /// Reads lines from the stranger until one is `line` (an event, not a delay).
    static func waitForLine(_ handle: FileHandle, _ line: String) -> Bool {
        var buffer = ""
        while true {
            let data = handle.availableData
            guard !data.isEmpty else { return false }
            buffer += String(decoding: data, as: UTF8.self)
            if buffer.split(separator: "\n").contains(where: { $0 == line }) { return true }
        }
    }

    /// The stranger's squatter listening on `STICKY/sq/prewarm.sock`, in a directory of its
    /// own made first in a /tmp-like one; returns the paths and the process, ready.
    static func squat() throws -> (sticky: String, scripts: String, squatted: String, process: Process) {
        let sticky = try stickyDirectory()
        let scripts = try sharedDirectory()
        let squatted = sticky + "/sq"
        let (process, output) = try start(squatter, in: scripts, arguments: [squatted, "prewarm.sock"])
        guard waitForLine(output, "ready") else {
            kill(process.processIdentifier, SIGKILL)
            throw TimeoutError(what: "the squatter listens")
        }
        return (sticky, scripts, squatted, process)
    }

    /// Makes DIR (mode 0777, the stranger's), listens on DIR/NAME, says "ready", accepts one
    /// connection and writes how many bytes it got before EOF to DIR/received.
    static let squatter = """
        import os, socket, sys
        directory, name = sys.argv[1], sys.argv[2]
        os.makedirs(directory, exist_ok=True)
        os.chmod(directory, 0o777)
        server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        server.bind(os.path.join(directory, name))
        os.chmod(os.path.join(directory, name), 0o777)
        server.listen(8)
        print("ready", flush=True)
        server.settimeout(60)
        try:
            connection, _ = server.accept()
        except socket.timeout:
            sys.exit(0)
        connection.settimeout(10)
        total = 0
        try:
            while True:
                chunk = connection.recv(65536)
                if not chunk:
                    break
                total += len(chunk)
        except socket.timeout:
            pass
        with open(os.path.join(directory, "received"), "w") as f:
            f.write(str(total))
        """
}

/// Local trust: no other user on the host catches a caller's credentials, a claim line or the
/// daemon's descriptors (README.md, "Trust model").
extension LiveDaemons {
    @Suite("Local trust: other users of the host")
    struct LocalTrustTests {
        static let pool = """
            [[pool]]
            name = "p"
            command = "FAKE"
            spares = 1
            [pool.ready]
            send = '{"type":"control_request","request_id":"i","request":{"subtype":"initialize","hooks":null}}'
            expect = '"type":"control_response"'
            [pool.turn]
            end_type = "result"
            """

        /// A daemon started on the process's end: its exit status, stdout and stderr.
        static func serve(_ arguments: [String], environment: [String: String] = [:], config: String) throws -> CommandResult {
            let directory = try TestDaemon.makeTemporaryDirectory()
            let path = directory + "/prewarm.toml"
            try TestDaemon.configText(pools: config).write(toFile: path, atomically: true, encoding: .utf8)
            var env = ["XDG_STATE_HOME": directory + "/state", "PREWARM_SOCKET": "", "XDG_RUNTIME_DIR": ""]
            env.merge(environment) { _, new in new }
            // A daemon that wrongly starts is stopped by its own drain after SIGTERM below.
            return try runCommand("/usr/bin/timeout", ["-s", "TERM", "20", TestDaemon.prewarm, "serve", "--config", path] + arguments, environment: env)
        }

        /// A socket directory another user made first (and listens in) stops the daemon with a
        /// message naming the path; so do a world-writable runtime directory and a symbolic
        /// link on the way. (Before: the daemon refused a live socket with exit 69, or bound
        /// inside the other user's directory.)
        @Test(.enabled(if: Stranger.available, "\(Stranger.missing)"))
        func aSquattedSocketDirectoryStopsTheDaemon() throws {
            let (sticky, _, squatted, squatter) = try Stranger.squat()
            defer { kill(squatter.processIdentifier, SIGKILL) }

            let squattedRun = try Self.serve(["--socket", squatted + "/prewarm.sock"], config: Self.pool)
            #expect(squattedRun.status == 78, "\(squattedRun)")
            #expect(squattedRun.err.contains("\(squatted) is owned by uid \(Stranger.uid)"), "\(squattedRun)")

            // $XDG_RUNTIME_DIR set to a directory anyone can write (as /tmp): refused too.
            let runtime = try Self.serve([], environment: ["XDG_RUNTIME_DIR": sticky], config: Self.pool)
            #expect(runtime.status == 78, "\(runtime)")
            #expect(runtime.err.contains("\(sticky) is writable by other users"), "\(runtime)")

            // A link on the way is never followed.
            let target = try TestDaemon.makeTemporaryDirectory()
            try FileManager.default.createSymbolicLink(atPath: sticky + "/link", withDestinationPath: target)
            let linked = try Self.serve(["--socket", sticky + "/link/prewarm.sock"], config: Self.pool)
            #expect(linked.status == 78, "\(linked)")
            #expect(linked.err.contains("\(sticky)/link is a symbolic link"), "\(linked)")
            #expect(!FileManager.default.fileExists(atPath: target + "/prewarm.sock"))
        }

        /// The default socket is in a directory of its own (made and checked), not a file
        /// straight in /tmp that anyone could make first.
        @Test func theDefaultSocketIsInADirectoryOfItsOwn() {
            #expect(SocketPath.defaultPath(environment: [:], uid: 1234) == "/tmp/prewarm-1234/prewarm.sock")
            #expect(SocketPath.defaultPath(environment: ["XDG_RUNTIME_DIR": "/run/user/1234"], uid: 1234) == "/run/user/1234/prewarm.sock")
        }

        /// StrictModes' rules, one by one: a foreign owner, group or other write, and /tmp as
        /// a parent but never as the directory itself.
        @Test func directoriesAreJudgedLikeStrictModes() throws {
            let me = getuid()
            #expect(TrustedDirectory.problem(owner: me, mode: S_IFDIR | 0o700, isTarget: true, daemonUID: me) == nil)
            #expect(TrustedDirectory.problem(owner: 0, mode: S_IFDIR | 0o755, isTarget: false, daemonUID: me) == nil)
            #expect(TrustedDirectory.problem(owner: 0, mode: S_IFDIR | 0o1777, isTarget: false, daemonUID: me) == nil)
            #expect(TrustedDirectory.problem(owner: 0, mode: S_IFDIR | 0o1777, isTarget: true, daemonUID: me) != nil)
            #expect(TrustedDirectory.problem(owner: 0, mode: S_IFDIR | 0o777, isTarget: false, daemonUID: me) != nil)
            #expect(TrustedDirectory.problem(owner: me, mode: S_IFDIR | 0o770, isTarget: true, daemonUID: me) != nil)
            #expect(TrustedDirectory.problem(owner: me &+ 1, mode: S_IFDIR | 0o700, isTarget: false, daemonUID: me) != nil)

            // Made where missing, 0700, and an existing one of ours only given search bits.
            let root = try TestDaemon.makeTemporaryDirectory()
            defer { try? FileManager.default.removeItem(atPath: root) }
            try TrustedDirectory.prepare(root + "/a/b", purpose: "a test")
            var info = stat()
            #expect(stat(root + "/a/b", &info) == 0 && info.st_mode & 0o7777 == 0o700)
            try TrustedDirectory.prepare(root + "/a/b", mode: 0o711, purpose: "a test")
            #expect(stat(root + "/a/b", &info) == 0 && info.st_mode & 0o7777 == 0o711)
            chmod(root + "/a", 0o777)
            #expect(throws: PrewarmError.self) { try TrustedDirectory.check(root + "/a/b", purpose: "a test") }
        }

        /// `prewarm-claude` facing a socket another user listens on: it sends nothing (the
        /// squatter reads 0 bytes), says why on stderr, and runs the real CLI. (Before: it sent
        /// the caller's whole environment, API keys included, then fell back silently.)
        @Test(.enabled(if: Stranger.available, "\(Stranger.missing)"))
        func prewarmClaudeSendsNothingToAStranger() throws {
            let (_, scripts, squatted, squatter) = try Stranger.squat()
            defer { kill(squatter.processIdentifier, SIGKILL) }
            let cli = try DropInTests.fakeCLI(in: scripts)
            let (status, out, err) = try DropInTests.run(
                ["-p", "hello"],
                environment: [
                    "PREWARM_CLAUDE_CLI": cli, "PREWARM_SOCKET": squatted + "/prewarm.sock", "ANTHROPIC_API_KEY": "sk-secret-of-the-caller",
                    "PREWARM_TEST_MARK": "kept", "PATH": "/usr/bin:/bin",
                ],
                stdin: ""
            )
            #expect(status == 7, "\(err)")
            #expect(out.contains("arg:hello") && out.contains("env:kept"), "\(out)")
            #expect(err.contains("is served by pid") && err.contains("of uid \(Stranger.uid)") && err.contains("nothing was sent"), "\(err)")
            squatter.waitUntilExit()
            #expect((try? String(contentsOfFile: squatted + "/received", encoding: .utf8)) == "0")
        }

        /// What `prewarm-claude` sends a daemon of its own uid: the variables the daemon names
        /// in `GET /v1/runs/environment` (host, claimable, markers, HOME, the pools' names),
        /// never the rest. An older daemon (no such route) and a refusal send it to the real
        /// CLI, said with PREWARM_CLAUDE_DEBUG=1. The daemon here is a stand-in that records.
        @Test(.enabled(if: Stranger.python != nil, "needs /usr/bin/python3"))
        func prewarmClaudeSendsOnlyWhatRoutesTheRun() throws {
            let directory = try TestDaemon.makeTemporaryDirectory()
            let socket = directory + "/d.sock"
            let recorder = """
                import base64, json, os, socket, sys
                path, mode, out = sys.argv[1], sys.argv[2], sys.argv[3]
                server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                server.bind(path)
                server.listen(4)
                print("ready", flush=True)
                server.settimeout(30)
                def head(c):
                    data = b""
                    while b"\\r\\n\\r\\n" not in data:
                        chunk = c.recv(65536)
                        if not chunk:
                            break
                        data += chunk
                    return data.decode()
                c, _ = server.accept()
                request = head(c)
                if mode == "old":
                    c.sendall(b"HTTP/1.1 404 Not Found\\r\\nContent-Length: 0\\r\\nConnection: close\\r\\n\\r\\n")
                    c.close()
                    sys.exit(0)
                body = json.dumps({"names": ["HOME", "MY_POOL_VAR", "CLAUDE_CODE_OAUTH_TOKEN"], "prefixes": ["ANTHROPIC_", "CLAUDE_"], "suffixes": ["_PROXY"]}).encode()
                c.sendall(b"HTTP/1.1 200 OK\\r\\nContent-Type: application/json\\r\\nContent-Length: %d\\r\\nConnection: close\\r\\n\\r\\n" % len(body) + body)
                c.close()
                c, _ = server.accept()
                request = head(c)
                run = [line.split(": ", 1)[1] for line in request.split("\\r\\n") if line.lower().startswith("prewarm-run: ")][0]
                with open(out, "w") as f:
                    f.write(base64.b64decode(run).decode())
                error = b'{"error":{"code":"run_not_served","message":"not today"}}'
                c.sendall(b"HTTP/1.1 503 Service Unavailable\\r\\nContent-Type: application/json\\r\\nContent-Length: %d\\r\\nConnection: close\\r\\n\\r\\n" % len(error) + error)
                c.close()
                """
            let script = directory + "/recorder.py"
            try recorder.write(toFile: script, atomically: true, encoding: .utf8)
            let cli = try DropInTests.fakeCLI(in: directory)
            let environment = [
                "PREWARM_CLAUDE_CLI": cli, "PREWARM_SOCKET": socket, "PREWARM_CLAUDE_DEBUG": "1", "PATH": "/usr/bin:/bin", "HOME": "/home/caller",
                "ANTHROPIC_API_KEY": "sk-needed", "CLAUDE_CODE_OAUTH_TOKEN": "oauth-needed", "MY_POOL_VAR": "pooled", "HTTPS_PROXY": "http://proxy",
                "DATABASE_PASSWORD": "never-sent", "GITHUB_TOKEN": "never-sent-either", "PREWARM_TEST_MARK": "kept",
            ]
            for mode in ["current", "old"] {
                try? FileManager.default.removeItem(atPath: socket)
                let recorded = directory + "/run-\(mode).json"
                let server = Process()
                server.executableURL = URL(fileURLWithPath: Stranger.python!)
                server.arguments = [script, socket, mode, recorded]
                let output = Pipe()
                server.standardOutput = output
                try server.run()
                defer { kill(server.processIdentifier, SIGKILL) }
                #expect(Stranger.waitForLine(output.fileHandleForReading, "ready"))
                let (status, out, err) = try DropInTests.run(["-p", "hello"], environment: environment, stdin: "")
                #expect(status == 7, "\(err)")
                #expect(out.contains("env:kept"))
                server.waitUntilExit()
                if mode == "old" {
                    #expect(err.contains("running the real CLI: the daemon is older than this prewarm-claude"), "\(err)")
                    #expect(!FileManager.default.fileExists(atPath: recorded))
                    continue
                }
                #expect(err.contains("running the real CLI: the daemon answered 503: not today"), "\(err)")
                let run = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: recorded))) as? [String: Any]
                let env = run?["env"] as? [String: String] ?? [:]
                #expect(env == [
                    "HOME": "/home/caller", "ANTHROPIC_API_KEY": "sk-needed", "CLAUDE_CODE_OAUTH_TOKEN": "oauth-needed", "MY_POOL_VAR": "pooled",
                    "HTTPS_PROXY": "http://proxy",
                ])
            }
        }

        /// With a universal spare's root made by another user (here: the state directory,
        /// where the root now lives), the daemon does not start: it never parks a spare, or
        /// sends a claim line, where someone else can swap the socket. (Before: the root was a
        /// fixed /tmp path whose owner and mode were never checked.)
        @Test(.enabled(if: Stranger.available, "\(Stranger.missing)"))
        func aSquattedUniversalRootStopsTheDaemon() throws {
            let sticky = try Stranger.stickyDirectory()
            let scripts = try Stranger.sharedDirectory()
            let made = try Stranger.run(
                "import os, sys\nos.makedirs(sys.argv[1] + '/prewarm/bg', exist_ok=True)\nos.chmod(sys.argv[1] + '/prewarm', 0o777)\nos.chmod(sys.argv[1] + '/prewarm/bg', 0o777)\n",
                in: scripts, arguments: [sticky]
            )
            #expect(made.status == 0, "\(made)")
            let universal = """
                [[pool]]
                name = "u"
                kind = "claude"
                command = "FAKE"
                spares = 0
                universal_spares = 1
                """
            let directory = try TestDaemon.makeTemporaryDirectory()
            let run = try Self.serve(["--socket", directory + "/s.sock"], environment: ["XDG_STATE_HOME": sticky], config: universal)
            #expect(run.status == 78, "\(run)")
            #expect(run.err.contains("\(sticky)/prewarm is owned by uid \(Stranger.uid)"), "\(run)")
            #expect(!FileManager.default.fileExists(atPath: directory + "/s.sock"))

            // A state directory of ours whose bg root someone left open to all: refused too.
            let state = try TestDaemon.makeTemporaryDirectory()
            try FileManager.default.createDirectory(atPath: state + "/prewarm/bg", withIntermediateDirectories: true)
            chmod(state + "/prewarm/bg", 0o777)
            let open = try Self.serve(["--socket", directory + "/s.sock"], environment: ["XDG_STATE_HOME": state], config: universal)
            #expect(open.status == 78, "\(open)")
            #expect(open.err.contains("\(state)/prewarm/bg is writable by other users"), "\(open)")
        }

        /// A claim line goes only to the spare's own socket: when the process that listens
        /// there is not the spare (another pid, or another uid), nothing is written.
        @Test func aClaimGoesOnlyToTheSparesOwnSocket() throws {
            let directory = try TestDaemon.makeTemporaryDirectory()
            defer { try? FileManager.default.removeItem(atPath: directory) }
            let path = directory + "/s"
            let listener = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
            defer { close(listener) }
            var address = sockaddr_un()
            address.sun_family = sa_family_t(AF_UNIX)
            withUnsafeMutableBytes(of: &address.sun_path) { raw in
                raw.copyBytes(from: Array(path.utf8))
                raw[path.utf8.count] = 0
            }
            let bound = withUnsafePointer(to: &address) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(listener, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
            }
            #expect(bound == 0 && listen(listener, 4) == 0)
            let endpoint = UniversalSpare.Endpoint(directory: directory, socket: path, token: "t")
            // This process listens; the spare is some other pid.
            let spare = getpid() == 1 ? 2 : getpid() - 1
            #expect(throws: UniversalSpare.ClaimFailure.self) {
                try UniversalSpare.claim(endpoint, pid: spare, cwd: "/", env: ["ANTHROPIC_API_KEY": "secret"], argv: [], timeout: .seconds(2))
            }
            let accepted = accept(listener, nil, nil)
            #expect(accepted >= 0)
            defer { close(accepted) }
            var byte: UInt8 = 0
            #expect(recv(accepted, &byte, 1, Int32(MSG_DONTWAIT)) == 0, "the claim line reached a process that is not the spare")
        }

        /// A uid not allowed gets 403 at accept, before any request is read, however many
        /// connections it opens; the daemon keeps serving its own uid and its spares keep
        /// starting. (Before: about 280 silent connections of a stranger used up the
        /// descriptors: /healthz stopped answering, replacements failed with EMFILE.)
        @Test(.enabled(if: Stranger.available, "\(Stranger.missing)"))
        func strangersAreRefusedAtAccept() async throws {
            let daemon = try await TestDaemon(pools: Self.pool, top: "allowed_uids = [4242]")
            let scripts = try Stranger.sharedDirectory()
            let flood = """
                import socket, sys
                connections = []
                for _ in range(300):
                    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                    s.connect(sys.argv[1])
                    connections.append(s)
                refused = 0
                for s in connections:
                    s.settimeout(10)
                    data = b""
                    while True:
                        chunk = s.recv(4096)
                        if not chunk:
                            break
                        data += chunk
                    if data.startswith(b"HTTP/1.1 403") and b'"forbidden"' in data:
                        refused += 1
                print(refused)
                """
            let result = try Stranger.run(flood, in: scripts, arguments: [daemon.socket])
            #expect(result.status == 0, "\(result)")
            #expect(result.out.trimmingCharacters(in: .whitespacesAndNewlines) == "300", "\(result)")
            #expect(try await daemon.client.request(.GET, "/healthz").status == 200)
            let turn = try await daemon.turn("p")
            #expect(turn.status == 200)
            let health = try JSONDecoder().decode(Health.self, from: Data(try await daemon.client.request(.GET, "/healthz").body.readableBytesView))
            let descriptors = try #require(health.descriptors)
            #expect(descriptors.open < 200 && descriptors.limit >= 1024, "\(descriptors)")
            #expect(try await daemon.pool("p").startFailures == 0)
        }

        /// An allowed uid other than the daemon's holds at most max_connections_per_uid
        /// connections: the next gets 429 `too_many_connections` at accept; once it closes
        /// some, it is served again. The daemon's own uid is not counted.
        @Test(.enabled(if: Stranger.available, "\(Stranger.missing)"))
        func connectionsPerUIDAreCapped() async throws {
            let daemon = try await TestDaemon(pools: Self.pool, top: "allowed_uids = [\(Stranger.uid)]\nmax_connections_per_uid = 8")
            let scripts = try Stranger.sharedDirectory()
            let script = """
                import socket, sys, time
                def connect():
                    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                    s.connect(sys.argv[1])
                    s.settimeout(10)
                    return s
                def status(s):
                    # One keep-alive request: its status line (the connection stays open).
                    s.sendall(b"GET /healthz HTTP/1.1\\r\\nHost: x\\r\\n\\r\\n")
                    data = b""
                    while b"\\r\\n\\r\\n" not in data:
                        chunk = s.recv(4096)
                        if not chunk:
                            break
                        data += chunk
                    return data.split(b"\\r\\n")[0].decode()
                held = []
                for _ in range(8):
                    s = connect()
                    assert status(s).startswith("HTTP/1.1 200"), "a connection under the cap was refused"
                    held.append(s)
                print("8 held")
                extra = connect()
                data = b""
                while True:
                    chunk = extra.recv(4096)
                    if not chunk:
                        break
                    data += chunk
                print(data.split(b"\\r\\n")[0].decode(), b"too_many_connections" in data)
                for s in held:
                    s.close()
                # The daemon sees the closes a moment later: retried until it has.
                deadline = time.time() + 10
                while time.time() < deadline:
                    try:
                        line = status(connect())
                    except OSError:
                        line = ""
                    if line.startswith("HTTP/1.1 200"):
                        print(line)
                        break
                    time.sleep(0.05)
                """
            // The daemon's uid is not counted: more than 8 of its own at once are served.
            let own = try (0..<12).map { _ in try UnixStreamSocket(path: daemon.socket) }
            let result = try Stranger.run(script, in: scripts, arguments: [daemon.socket])
            #expect(result.status == 0, "\(result)")
            let lines = result.out.split(separator: "\n").map(String.init)
            #expect(lines.count == 3, "\(result)")
            #expect(lines.first == "8 held", "\(result)")
            #expect(lines.dropFirst().first == "HTTP/1.1 429 Too Many Requests True", "\(result)")
            #expect(lines.last?.hasPrefix("HTTP/1.1 200") == true, "\(result)")
            // The daemon's own 12 connections, beside the stranger's, are all still served.
            for connection in own {
                #expect(connection.write(Array("GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n".utf8)))
                #expect(connection.readHead()?.hasPrefix("HTTP/1.1 200") == true)
            }
        }

        /// A client's X-Request-Id with spaces and `=` never becomes fields of the log line:
        /// it is replaced by the daemon's own id; a plain one is kept. Values the daemon logs
        /// with spaces are quoted. (Before: `t1 turn.outcome=completed pool.name=billing` was
        /// written as it was.)
        @Test func requestIDsCannotForgeLogFields() async throws {
            let daemon = try await TestDaemon(pools: Self.pool, environment: ["PREWARM_LOG_LEVEL": "debug"])
            let forged = try await daemon.turn("p", headers: [("X-Request-Id", "t1 turn.outcome=completed pool.name=billing")])
            #expect(forged.status == 200)
            let id = try #require(forged.headers.first(name: "Prewarm-Turn-Id"))
            #expect(RequestID.accepted(id) == id && !id.contains("billing"))
            let plain = try await daemon.turn("p", headers: [("X-Request-Id", "req-42.a_b:c")])
            #expect(plain.headers.first(name: "Prewarm-Turn-Id") == "req-42.a_b:c")
            try await waitUntil("both turns are logged", timeout: .seconds(10)) { daemon.log.contains("req-42.a_b:c") }
            #expect(!daemon.log.contains("pool.name=billing"))
            #expect(!daemon.log.contains("t1 turn.outcome"))

            #expect(RequestID.accepted(String(repeating: "a", count: 128)) != nil)
            #expect(RequestID.accepted(String(repeating: "a", count: 129)) == nil)
            #expect(RequestID.accepted("a\"b") == nil && RequestID.accepted("") == nil && RequestID.accepted("a\nb") == nil)
            #expect(QuotingLogHandler.quote("plain") == "plain")
            #expect(QuotingLogHandler.quote("a b=c") == #""a b=c""#)
            #expect(QuotingLogHandler.quote("x\"y\n") == #""x\"y\n""#)
            #expect(QuotingLogHandler.quote("") == #""""#)
        }

        /// A failing CLI's stderr tail is in the status for the daemon's uid, and withheld
        /// from another allowed uid (the rest of the reason kept).
        @Test(.enabled(if: Stranger.available && ExternalTool.onPath("curl") != nil, "\(Stranger.missing), and curl"))
        func stderrTailOnlyForTheDaemonsUID() async throws {
            let scripts = try Stranger.sharedDirectory()
            let failing = scripts + "/failing.sh"
            try "#!/bin/sh\necho 'token=SECRET-TAIL' >&2\nexit 3\n".write(toFile: failing, atomically: true, encoding: .utf8)
            chmod(failing, 0o755)
            let pools = """
                [[pool]]
                name = "f"
                command = "\(failing)"
                spares = 1
                [pool.turn]
                end_type = "result"
                """
            let daemon = try await TestDaemon(pools: pools, top: "allowed_uids = [\(Stranger.uid)]", waitForIdle: false)
            // Exits before or after the daemon read its stderr: the reasons with a tail come soon
            // (each failure replaces the last: the one read is the one checked).
            let own = try await poll(timeout: .seconds(30)) { try await daemon.pool("f").lastError ?? "" } until: { $0.contains("; stderr: ") }
            #expect(own.contains("SECRET-TAIL"), "\(own)")
            // Read as the other uid until a reason that had a tail is the last one.
            let curl = try await poll(timeout: .seconds(30)) {
                try runCommand(
                    Stranger.setpriv!, Stranger.command([ExternalTool.onPath("curl")!, "-s", "--unix-socket", daemon.socket, "http://localhost/v1/pools/f"])
                )
            } until: { $0.out.contains("; stderr: ") }
            #expect(curl.status == 0, "\(curl)")
            #expect(curl.out.contains("\"last_error\""), "\(curl)")
            #expect(!curl.out.contains("SECRET-TAIL"), "\(curl)")
            #expect(curl.out.contains("shown only to the daemon's uid and root"), "\(curl)")
        }
    }
}
