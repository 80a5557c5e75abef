import Foundation
import NIOCore
import PrewarmClient
import Testing

@testable import PrewarmCore

#if canImport(Glibc)
import Glibc
#endif

/// Isolation between callers (README.md, "Trust model"): what a caller of another uid can and
/// cannot make the daemon do, through the real socket, that uid played by a `setpriv` child.
extension LiveDaemons {
    @Suite("Isolation: callers of another uid")
    struct IsolationTests {
        /// Sends each request as the stranger and prints, a line each, `{"name", "status",
        /// "field", "session"}` (the session id of a served turn's result).
        static let client = """
            import json, socket, sys
            path, requests = sys.argv[1], json.loads(sys.argv[2])
            for r in requests:
                s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                s.connect(path)
                body = r["body"].encode()
                s.sendall(("POST /v1/pools/c/turns HTTP/1.1\\r\\nHost: x\\r\\nContent-Type: %s\\r\\nContent-Length: %d\\r\\nConnection: close\\r\\n\\r\\n" % (r["type"], len(body))).encode() + body)
                data = b""
                while True:
                    chunk = s.recv(65536)
                    if not chunk:
                        break
                    data += chunk
                head, _, rest = data.partition(b"\\r\\n\\r\\n")
                status = int(head.split(b" ")[1])
                field, session, cwd = None, None, None
                if status == 200:
                    for line in rest.split(b"\\n"):
                        start = line.find(b"{")
                        try:
                            message = json.loads(line[start:])
                        except ValueError:
                            continue
                        if message.get("type") == "result":
                            session = message.get("session_id")
                        if message.get("subtype") == "init":
                            cwd = message.get("cwd")
                else:
                    try:
                        field = json.loads(rest).get("error", {}).get("field")
                    except ValueError:
                        field = rest.decode(errors="replace")
                print(json.dumps({"name": r["name"], "status": status, "field": field, "session": session, "cwd": cwd}), flush=True)
            """

        static func pool(roots: String) -> String {
            """
            [[pool]]
            name = "c"
            kind = "claude"
            command = "FAKE"
            spares = 1
            when_empty = "start"
            caller_env = ["PREWARM_TEST_CLAIMABLE"]
            caller_roots = ["\(roots)"]
            caller_permission_modes = ["default", "acceptEdits"]
            [pool.session]
            permission_mode = "default"
            """
        }

        static func turn(_ name: String, prompt: String = "hi", session: [String: Any] = [:]) -> [String: String] {
            let body = try! JSONSerialization.data(withJSONObject: ["prompt": prompt, "session": session])
            return ["name": name, "type": "application/json", "body": String(decoding: body, as: UTF8.self)]
        }

        static func asStranger(_ daemon: TestDaemon, _ requests: [[String: String]]) throws -> [String: [String: Any]] {
            let scripts = try Stranger.sharedDirectory()
            let encoded = String(decoding: try JSONSerialization.data(withJSONObject: requests), as: UTF8.self)
            let result = try Stranger.run(client, in: scripts, arguments: [daemon.socket, encoded])
            #expect(result.status == 0, "\(result)")
            var answers: [String: [String: Any]] = [:]
            for line in result.out.split(separator: "\n") {
                guard let object = try? JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any], let name = object["name"] as? String else { continue }
                answers[name] = object
            }
            return answers
        }

        /// A caller of another uid: no variable of the deny list and none outside caller_env
        /// (the cold process never sees them either), no directory outside caller_roots (on its
        /// real path: a link inside a root to a directory outside is refused), no permission
        /// mode outside caller_permission_modes, no raw stream-json, no resume of a session it
        /// did not make; each refused with 403 `forbidden` and the field. What the policy
        /// allows is served. (Before: an allowed uid ran the CLI in a root-only directory with
        /// LD_PRELOAD, and its session's spare went to a third uid.)
        @Test(.enabled(if: Stranger.available, "\(Stranger.missing)"))
        func anotherUIDIsHeldToThePoolsPolicy() async throws {
            let roots = try TestDaemon.makeTemporaryDirectory()
            let allowed = roots + "/project"
            try FileManager.default.createDirectory(atPath: allowed, withIntermediateDirectories: true)
            let private0700 = try TestDaemon.makeTemporaryDirectory()
            chmod(private0700, 0o700)
            try FileManager.default.createSymbolicLink(atPath: roots + "/escape", withDestinationPath: private0700)
            try FileManager.default.createSymbolicLink(atPath: roots + "/inside", withDestinationPath: allowed)
            let daemon = try await TestDaemon(pools: Self.pool(roots: roots), top: "allowed_uids = [\(Stranger.uid)]")

            // The daemon's own uid makes a session.
            let own = try await ClaudePoolTests.jsonTurn(daemon, session: ["cwd": allowed])
            #expect(own.status == 200)
            let ownSession = try #require(jsonLines(own).last?["session_id"] as? String)

            let answers = try Self.asStranger(daemon, [
                Self.turn("ld_preload", session: ["cwd": allowed, "env": ["LD_PRELOAD": "/tmp/x.so"]]),
                Self.turn("base_url", session: ["cwd": allowed, "env": ["ANTHROPIC_BASE_URL": "http://127.0.0.1:1"]]),
                Self.turn("not_listed", session: ["cwd": allowed, "env": ["OTHER": "1"]]),
                Self.turn("root_only", session: ["cwd": private0700]),
                Self.turn("link_out", session: ["cwd": roots + "/escape"]),
                Self.turn("add_dir", session: ["cwd": allowed, "additional_directories": [allowed, "/etc"]]),
                Self.turn("bypass", session: ["cwd": allowed, "permission_mode": "bypassPermissions"]),
                Self.turn("resume_other", session: ["cwd": allowed, "resume": ownSession]),
                ["name": "raw", "type": "application/x-ndjson", "body": TestDaemon.userLine + "\n"],
                Self.turn("allowed", session: ["cwd": allowed, "env": ["PREWARM_TEST_CLAIMABLE": "of-the-caller"], "permission_mode": "acceptEdits"]),
                Self.turn("via_link", session: ["cwd": roots + "/inside"]),
            ])
            let expected: [(String, String)] = [
                ("ld_preload", "session.env.LD_PRELOAD"), ("base_url", "session.env.ANTHROPIC_BASE_URL"), ("not_listed", "session.env.OTHER"),
                ("root_only", "session.cwd"), ("link_out", "session.cwd"), ("add_dir", "session.additional_directories[1]"),
                ("bypass", "session.permission_mode"), ("resume_other", "session.resume"), ("raw", "body"),
            ]
            for (name, field) in expected {
                #expect(answers[name]?["status"] as? Int == 403, "\(name): \(answers[name] ?? [:])")
                #expect(answers[name]?["field"] as? String == field, "\(name): \(answers[name] ?? [:])")
            }
            #expect(answers["allowed"]?["status"] as? Int == 200, "\(answers["allowed"] ?? [:])")
            // A link inside the roots to a directory inside them is served, in the real path
            // that was checked (not the link, which the caller could swap afterwards).
            #expect(answers["via_link"]?["status"] as? Int == 200 && answers["via_link"]?["cwd"] as? String == allowed, "\(answers["via_link"] ?? [:])")

            // Its own session it may resume (not refused by the policy).
            let mine = try #require(answers["allowed"]?["session"] as? String)
            let again = try Self.asStranger(daemon, [Self.turn("resume_own", session: ["cwd": allowed, "resume": mine])])
            #expect(again["resume_own"]?["status"] as? Int != 403, "\(again)")
            // The daemon's own uid is not held to it.
            let unrestricted = try await ClaudePoolTests.jsonTurn(daemon, session: ["cwd": private0700, "permission_mode": "bypassPermissions"])
            #expect(unrestricted.status == 200)
        }

        /// Through the socket: in another uid's two-way turn a `control_request` line (here
        /// `set_permission_mode`, which the fake agent answers with an error naming its id)
        /// never reaches the process, while its user message does; the daemon's own uid's does.
        @Test(.enabled(if: Stranger.available, "\(Stranger.missing)"))
        func anotherUIDsControlRequestsNeverReachTheProcess() async throws {
            let roots = try TestDaemon.makeTemporaryDirectory()
            let daemon = try await TestDaemon(pools: Self.pool(roots: roots), top: "allowed_uids = [\(Stranger.uid)]")
            let script = """
                import socket, sys
                s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                s.connect(sys.argv[1])
                s.settimeout(30)
                s.sendall(b"POST /v1/pools/c/turns HTTP/1.1\\r\\nHost: x\\r\\nConnection: Upgrade\\r\\nUpgrade: prewarm-stream\\r\\nContent-Length: 0\\r\\n\\r\\n")
                data = b""
                while b"\\r\\n\\r\\n" not in data:
                    data += s.recv(65536)
                head, _, rest = data.partition(b"\\r\\n\\r\\n")
                request = b'{"type":"control_request","request_id":"evil-1","request":{"subtype":"set_permission_mode","mode":"bypassPermissions"}}\\n'
                user = b'{"type":"user","message":{"role":"user","content":"hi"},"parent_tool_use_id":null,"session_id":"default"}\\n'
                s.sendall(request + user)
                s.shutdown(socket.SHUT_WR)
                while True:
                    chunk = s.recv(65536)
                    if not chunk:
                        break
                    rest += chunk
                print(head.split(b"\\r\\n")[0].decode(), b"evil-1" in rest, b'"type":"result"' in rest.replace(b" ", b""))
                """
            let scripts = try Stranger.sharedDirectory()
            let stranger = try Stranger.run(script, in: scripts, arguments: [daemon.socket])
            #expect(stranger.out.trimmingCharacters(in: .whitespacesAndNewlines) == "HTTP/1.1 101 Switching Protocols False True", "\(stranger)")
            // The same stream from the daemon's own uid: the request reaches the process.
            let own = try runCommand("/usr/bin/python3", ["-c", script, daemon.socket])
            #expect(own.out.trimmingCharacters(in: .whitespacesAndNewlines) == "HTTP/1.1 101 Switching Protocols True True", "\(own)")
        }

        /// A two-way turn of another uid: its control_request lines never reach the process;
        /// user messages and control_response lines do, byte for byte. (The filter's rules.)
        @Test func controlRequestsOfAnotherUIDAreHeldBack() {
            var filter = ControlLineFilter()
            let user = #"{"type":"user","message":{"role":"user","content":"hi"}}"#
            let request = #"{"type":"control_request","request_id":"x","request":{"subtype":"set_permission_mode","mode":"bypassPermissions"}}"#
            let answer = #"{"type":"control_response","response":{"subtype":"success","request_id":"c1"}}"#
            let stream = Array((user + "\n" + request + "\n" + answer + "\n" + user).utf8)
            var out: [UInt8] = []
            // Fed in small pieces, as a socket delivers them.
            var index = 0
            while index < stream.count {
                let end = min(stream.count, index + 7)
                out += filter.forward(stream[index..<end])
                index = end
            }
            out += filter.finish()
            #expect(String(decoding: out, as: UTF8.self) == user + "\n" + answer + "\n" + user)
            #expect(filter.dropped == 1)
        }
    }
}
