import ArgumentParser
import Foundation
import Hummingbird
import Logging
import NIOCore

/// `prewarm-fake-model`: a stand-in for the Anthropic Messages API on loopback, so the real
/// Claude Code CLI runs full turns with no network and first-token latency can be measured.
///
/// `POST /v1/messages` answers Server-Sent Events when `stream` is true (message_start,
/// content_block_start, content_block_delta..., content_block_stop, message_delta,
/// message_stop) after `--ttft-ms`, one text token every `--token-ms`; a JSON message
/// otherwise. A turn asks for a tool (to drive a permission prompt) when its last user
/// message contains `--tool-trigger`, or always with `--tool-use`; once the tool's result
/// comes back, the answer is text. A turn whose last user message contains `--mcp-trigger`
/// asks for `--mcp-tool` instead (an in-process SDK MCP tool). The text's last token says
/// how many user turns the request carried (`[user turns: N]`), so a client can tell a
/// resumed conversation from a fresh one. `POST /v1/messages/count_tokens` is answered too.
@main
struct FakeModel: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "prewarm-fake-model",
        abstract: "A fake Anthropic Messages API on loopback, for tests and benchmarks."
    )

    @Option(help: "TCP port on 127.0.0.1; 0 lets the OS choose. The first stdout line is {\"port\":N}.")
    var port = 0
    @Option(name: .customLong("ttft-ms"), help: "Time to the first token.")
    var ttftMs = 50
    @Option(help: "Text tokens per answer.")
    var tokens = 5
    @Option(name: .customLong("token-ms"), help: "Time between tokens.")
    var tokenMs = 10
    @Flag(name: .customLong("tool-use"), help: "Ask for a tool on every first request of a turn.")
    var toolUse = false
    @Option(name: .customLong("tool-trigger"), help: "Ask for a tool when the last user message contains this.")
    var toolTrigger = "PREWARM_TOOL_USE"
    @Option(name: .customLong("tool-name"), help: "The tool asked for.")
    var toolName = "Bash"
    @Option(name: .customLong("tool-input"), help: "The tool's input, JSON.")
    var toolInput = #"{"command":"echo prewarm","description":"Print a word"}"#
    @Option(name: .customLong("mcp-trigger"), help: "Ask for the MCP tool when the last user message contains this.")
    var mcpTrigger = "PREWARM_MCP_TOOL"
    @Option(name: .customLong("mcp-tool"), help: "The MCP tool asked for.")
    var mcpTool = "mcp__calc__add"
    @Option(name: .customLong("mcp-input"), help: "The MCP tool's input, JSON.")
    var mcpInput = #"{"a":2,"b":3}"#

    func run() async throws {
        let settings = ModelSettings(
            ttft: .milliseconds(ttftMs), tokens: tokens, tokenGap: .milliseconds(tokenMs),
            toolUse: toolUse, toolTrigger: toolTrigger, toolName: toolName, toolInput: toolInput,
            mcpTrigger: mcpTrigger, mcpTool: mcpTool, mcpInput: mcpInput
        )
        var logger = Logger(label: "prewarm-fake-model")
        logger.logLevel = .warning
        let router = Router()
        router.post("/v1/messages") { request, _ in
            try await settings.messages(request)
        }
        router.post("/v1/messages/count_tokens") { request, _ in
            let body = try await request.body.collect(upTo: 64 << 20)
            return ModelSettings.json(["input_tokens": max(1, body.readableBytes / 4)])
        }
        let app = Application(
            router: router,
            configuration: .init(address: .hostname("127.0.0.1", port: port), serverName: nil),
            onServerRunning: { channel in
                let port = channel.localAddress?.port ?? 0
                FileHandle.standardOutput.write(Data("{\"port\":\(port)}\n".utf8))
            },
            logger: logger
        )
        try await app.runService()
    }
}

struct ModelSettings: Sendable {
    var ttft: Duration
    var tokens: Int
    var tokenGap: Duration
    var toolUse: Bool
    var toolTrigger: String
    var toolName: String
    var toolInput: String
    var mcpTrigger: String
    var mcpTool: String
    var mcpInput: String

    /// A last user message with this is answered after a minute.
    static let slowTrigger = "PREWARM_SLOW"

    func messages(_ request: Request) async throws -> Response {
        let body = try await request.body.collect(upTo: 64 << 20)
        guard let object = try? JSONSerialization.jsonObject(with: Data(buffer: body)) as? [String: Any] else {
            return Self.json(["type": "error", "error": ["type": "invalid_request_error", "message": "the body must be a JSON object"]], status: .badRequest)
        }
        let model = object["model"] as? String ?? "claude-fake"
        let stream = object["stream"] as? Bool ?? false
        let messages = object["messages"] as? [[String: Any]] ?? []
        var settings = self
        if wantsTool(messages, trigger: Self.slowTrigger, always: false) {
            // A turn that stays busy: for tests of a client leaving mid-turn.
            settings.ttft = .seconds(60)
        }
        if wantsTool(messages, trigger: mcpTrigger, always: false) {
            settings.toolName = mcpTool
            settings.toolInput = mcpInput
        }
        let askForTool = wantsTool(messages, trigger: toolTrigger, always: toolUse) || wantsTool(messages, trigger: mcpTrigger, always: false)
        let id = "msg_fake_\(UInt64.random(in: 0..<UInt64.max))"
        let words = (0..<tokens).map { $0 == 0 ? "Hello" : " word\($0)" } + [" [user turns: \(Self.userTurns(messages))]"]
        let toolName = settings.toolName
        let toolInputObject = settings.toolInputObject
        let chosen = settings

        guard stream else {
            try await Task.sleep(for: ttft)
            let content: [[String: Any]] =
                askForTool
                ? [["type": "tool_use", "id": "toolu_fake_1", "name": toolName, "input": toolInputObject]]
                : [["type": "text", "text": words.joined()]]
            return Self.json([
                "id": id, "type": "message", "role": "assistant", "model": model, "content": content,
                "stop_reason": askForTool ? "tool_use" : "end_turn", "stop_sequence": NSNull(),
                "usage": ["input_tokens": 10, "output_tokens": tokens],
            ])
        }
        let events = ResponseBody { writer in
            func send(_ event: String, _ payload: [String: Any]) async throws {
                let data = (try? JSONSerialization.data(withJSONObject: payload)) ?? Data()
                try await writer.write(ByteBuffer(string: "event: \(event)\ndata: \(String(decoding: data, as: UTF8.self))\n\n"))
            }
            try await send(
                "message_start",
                [
                    "type": "message_start",
                    "message": [
                        "id": id, "type": "message", "role": "assistant", "model": model, "content": [], "stop_reason": NSNull(),
                        "stop_sequence": NSNull(), "usage": ["input_tokens": 10, "output_tokens": 1],
                    ],
                ]
            )
            try await Task.sleep(for: chosen.ttft)
            if askForTool {
                try await send(
                    "content_block_start",
                    ["type": "content_block_start", "index": 0, "content_block": ["type": "tool_use", "id": "toolu_fake_1", "name": chosen.toolName, "input": [:]]]
                )
                try await send(
                    "content_block_delta",
                    ["type": "content_block_delta", "index": 0, "delta": ["type": "input_json_delta", "partial_json": chosen.toolInput]]
                )
            } else {
                try await send("content_block_start", ["type": "content_block_start", "index": 0, "content_block": ["type": "text", "text": ""]])
                for (index, word) in words.enumerated() {
                    if index > 0 { try await Task.sleep(for: chosen.tokenGap) }
                    try await send("content_block_delta", ["type": "content_block_delta", "index": 0, "delta": ["type": "text_delta", "text": word]])
                }
            }
            try await send("content_block_stop", ["type": "content_block_stop", "index": 0])
            try await send(
                "message_delta",
                [
                    "type": "message_delta", "delta": ["stop_reason": askForTool ? "tool_use" : "end_turn", "stop_sequence": NSNull()],
                    "usage": ["output_tokens": askForTool ? 1 : chosen.tokens],
                ]
            )
            try await send("message_stop", ["type": "message_stop"])
            try await writer.finish(nil)
        }
        return Response(
            status: .ok,
            headers: [.contentType: "text/event-stream", .cacheControl: "no-cache"],
            body: events
        )
    }

    var toolInputObject: Any {
        (try? JSONSerialization.jsonObject(with: Data(toolInput.utf8))) ?? [:]
    }

    /// A tool is asked for when the last user message is the user's text (not a tool's
    /// result) and `--tool-use` is set or the text holds the trigger.
    func wantsTool(_ messages: [[String: Any]], trigger: String, always: Bool) -> Bool {
        guard let last = messages.last(where: { $0["role"] as? String == "user" }) else { return false }
        var texts: [String] = []
        var hasToolResult = false
        if let content = last["content"] as? String {
            texts.append(content)
        } else if let blocks = last["content"] as? [[String: Any]] {
            for block in blocks {
                if block["type"] as? String == "tool_result" { hasToolResult = true }
                if let text = block["text"] as? String { texts.append(text) }
            }
        }
        if hasToolResult { return false }
        return always || texts.contains { $0.contains(trigger) }
    }

    /// User messages that hold the user's words (not only a tool's result).
    static func userTurns(_ messages: [[String: Any]]) -> Int {
        messages.filter { message in
            guard message["role"] as? String == "user" else { return false }
            if message["content"] is String { return true }
            let blocks = message["content"] as? [[String: Any]] ?? []
            return blocks.contains { $0["type"] as? String == "text" } && !blocks.contains { $0["type"] as? String == "tool_result" }
        }.count
    }

    static func json(_ object: [String: Any], status: HTTPResponse.Status = .ok) -> Response {
        let data = (try? JSONSerialization.data(withJSONObject: object)) ?? Data()
        return Response(status: status, headers: [.contentType: "application/json"], body: .init(byteBuffer: ByteBuffer(bytes: data)))
    }
}
