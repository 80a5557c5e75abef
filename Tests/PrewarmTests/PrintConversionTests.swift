import Foundation
import Testing

@testable import PrewarmCore

/// `claude -p` served from a stream-json spare: the recordings of the real CLI (2.1.332) in
/// `Fixtures/print/` (how they were made: its README) are the oracle. Each print-mode recording
/// is compared with its stream-json recording converted, fed in several chunkings.
@Suite("Print conversion")
struct PrintConversionTests {
    static let fixtures = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("Fixtures/print")

    static func file(_ name: String) -> [UInt8] {
        (try? [UInt8](Data(contentsOf: fixtures.appendingPathComponent(name)))) ?? []
    }

    struct Recording {
        var arguments: [String]
        var stdout: [UInt8]
        var stderr: [UInt8]
        var status: Int32

        init(_ name: String) {
            let argv = (try? JSONSerialization.jsonObject(with: Data(PrintConversionTests.file(name + ".argv")))) as? [String]
            arguments = argv ?? []
            stdout = PrintConversionTests.file(name + ".stdout")
            stderr = PrintConversionTests.file(name + ".stderr")
            status = Int32(String(decoding: PrintConversionTests.file(name + ".status"), as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)) ?? -1
        }
    }

    /// Splittings of `count` bytes: whole, byte by byte, and random cuts (fixed seeds).
    static func chunkings(_ count: Int) -> [[Int]] {
        var result: [[Int]] = [[count], Array(repeating: 1, count: count)]
        for seed in [1, 2, 3] as [UInt64] {
            var random = SeededGenerator(seed: seed)
            var sizes: [Int] = []
            var left = count
            while left > 0 {
                let size = min(left, 1 + Int(random.next() % 700))
                sizes.append(size)
                left -= size
            }
            result.append(sizes)
        }
        return result
    }

    static func convert(_ input: [UInt8], _ conversion: PrintConversion, sizes: [Int], exitStatus: Int32?, signal: Int32? = nil)
        -> (stdout: [UInt8], stderr: [UInt8], status: Int32)
    {
        var conversion = conversion
        var out: [UInt8] = []
        var start = 0
        for size in sizes {
            out += conversion.consume(Array(input[start..<start + size]))
            start += size
        }
        let end = conversion.finish(exitStatus: exitStatus, signal: signal)
        return (out + end.stdout, end.stderr, end.status)
    }

    /// (spare recording, print recording): the print run's command line decides the conversion.
    static let cases: [(spare: String, print: String)] = [
        ("plain.spare", "text.print"), ("plain.spare", "text-explicit.print"), ("plain.spare", "text-verbose.print"),
        ("plain.spare", "json.print"), ("plain.spare", "json-verbose.print"), ("plain.spare", "sj.print"),
        ("plain-partial.spare", "sj-partial.print"), ("plain-partial.spare", "sj.print"), ("plain-partial.spare", "text.print"),
        ("plain-partial.spare", "json.print"), ("plain-partial.spare", "json-verbose.print"),
        ("tool-allowedtools.spare", "tool-allowedtools-text.print"), ("tool-allowedtools.spare", "tool-allowedtools-json.print"),
        ("tool-allowedtools.spare", "tool-allowedtools-sj.print"), ("tool-allowedtools.spare", "tool-allowedtools-jsonv.print"),
        ("tool-denied.spare", "tool-denied-text.print"), ("tool-denied.spare", "tool-denied-json.print"),
        ("tool-denied.spare", "tool-denied-sj.print"), ("tool-denied.spare", "tool-denied-jsonv.print"),
        ("maxturns.spare", "maxturns-text.print"), ("maxturns.spare", "maxturns-json.print"),
        ("maxturns.spare", "maxturns-sj.print"), ("maxturns.spare", "maxturns-jsonv.print"),
        ("budget.spare", "budget-text.print"), ("budget.spare", "budget-json.print"), ("budget.spare", "budget-sj.print"),
        ("schema.spare", "schema-text.print"), ("schema.spare", "schema-json.print"), ("schema.spare", "schema-sj.print"),
        ("schema-plainmodel.spare", "schema-plainmodel-text.print"), ("schema-plainmodel.spare", "schema-plainmodel-json.print"),
        ("apierror.spare", "apierror-text.print"), ("apierror.spare", "apierror-json.print"), ("apierror.spare", "apierror-sj.print"),
        ("slash-unknown.spare", "slash-unknown.print"), ("slash-cost.spare", "slash-cost.print"),
        ("dash.spare", "dash-sep.print"), ("dash.spare", "dash-sep-json.print"),
        ("sigint.spare", "sigint-text.print"), ("sigint.spare", "sigint-json.print"), ("sigint.spare", "sigint-sj.print"),
        ("sigint-early.spare", "sigint-early-text.print"),
    ]

    /// Every recorded case: the converted spare output is what the CLI printed in print mode
    /// (text byte for byte; json and stream-json the same messages, keys in the same order,
    /// values equal but for run-to-run ones), the same stderr and exit status, in any chunking.
    @Test(arguments: cases.map { "\($0.spare) -> \($0.print)" })
    func recordedCase(_ name: String) throws {
        let pair = try #require(Self.cases.first { "\($0.spare) -> \($0.print)" == name })
        let spare = Recording(pair.spare)
        let printed = Recording(pair.print)
        #expect(!spare.stdout.isEmpty && !printed.arguments.isEmpty, "fixtures missing")
        let run = try #require(PrintRun.parse(printed.arguments, stdinIsTerminal: false))
        // The spare recorded ran the command line PrintRun gives (partial messages aside: a
        // spare started with them serves a caller without them).
        var expectedSpare = ClaudeCommandLine(run.spareArguments).options.map { "\($0.name)=\($0.value ?? "")" }.sorted()
        var recordedSpare = ClaudeCommandLine(spare.arguments).options.map { "\($0.name)=\($0.value ?? "")" }.sorted()
        expectedSpare.removeAll { $0.hasPrefix("--include-partial-messages") }
        recordedSpare.removeAll { $0.hasPrefix("--include-partial-messages") }
        #expect(expectedSpare == recordedSpare)
        for sizes in Self.chunkings(spare.stdout.count) {
            let got = Self.convert(spare.stdout, run.conversion(), sizes: sizes, exitStatus: spare.status)
            #expect(got.status == printed.status)
            #expect(String(decoding: got.stderr, as: UTF8.self) == String(decoding: printed.stderr, as: UTF8.self))
            let differences = OutputComparison.differences(got.stdout, printed.stdout, format: run.format, verbose: run.verbose)
            #expect(differences.isEmpty, "\(sizes.count) chunks: \(differences.prefix(8))")
        }
    }

    /// Text mode's error texts have no newline at the end (recorded: `Error: Reached max turns (1)`).
    @Test func errorTextsEndWithoutNewline() throws {
        let run = try #require(PrintRun.parse(["-p", "x", "--max-turns", "1"], stdinIsTerminal: false))
        var conversion = run.conversion()
        let line = #"{"type":"result","subtype":"error_max_turns","is_error":true,"errors":["Reached maximum number of turns (1)"]}"#
        #expect(conversion.consume(Array((line + "\n").utf8)) == Array("Error: Reached max turns (1)".utf8))
        let end = conversion.finish(exitStatus: 1, signal: nil)
        #expect(end.stdout.isEmpty && end.stderr.isEmpty && end.status == 1)
    }

    /// A last line without its newline reaches a stream-json caller as written; in text mode a
    /// result line cut before its newline still counts, and text that is not JSON is passed on.
    @Test func lastLineWithoutNewline() {
        var stream = PrintConversion(format: .streamJSON, verbose: true, partialMessages: false)
        var out = stream.consume(Array(#"{"type":"assistant"}"#.utf8) + Array("\n{\"type\":\"res".utf8))
        out += stream.consume(Array(#"ult","subtype":"success","result":"hi"}"#.utf8))
        out += stream.finish(exitStatus: 0, signal: nil).stdout
        #expect(String(decoding: out, as: UTF8.self) == #"{"type":"assistant"}"# + "\n" + #"{"type":"result","subtype":"success","result":"hi"}"#)

        var text = PrintConversion(format: .text, verbose: false, partialMessages: false)
        var printed = text.consume(Array(#"{"type":"result","subtype":"success","is_error":false,"result":"hi"}"#.utf8))
        #expect(printed.isEmpty)
        var end = text.finish(exitStatus: 0, signal: nil)
        printed += end.stdout
        #expect(String(decoding: printed, as: UTF8.self) == "hi\n" && end.status == 0)

        text = PrintConversion(format: .text, verbose: false, partialMessages: false)
        printed = text.consume(Array("not json\npartial tail".utf8))
        end = text.finish(exitStatus: 0, signal: nil)
        #expect(String(decoding: printed + end.stdout, as: UTF8.self) == "not json\npartial tail")
        #expect(String(decoding: end.stderr, as: UTF8.self) == "Error: No messages returned from query\n" && end.status == 1)
    }

    /// Killed mid-line: 128 + the signal, nothing more for text and json callers (a message cut
    /// short is not theirs), the cut line as it is for stream-json callers.
    @Test func killedMidLine() {
        let input = Array((#"{"type":"system","subtype":"init"}"# + "\n" + #"{"type":"assistant","message":{"con"#).utf8)
        for format in [PrintConversion.Format.text, .json, .streamJSON] {
            var conversion = PrintConversion(format: format, verbose: true, partialMessages: false)
            var out = conversion.consume(input)
            let end = conversion.finish(exitStatus: nil, signal: 9)
            out += end.stdout
            #expect(end.status == 137)
            #expect(end.stderr.isEmpty)
            #expect(out == (format == .streamJSON ? input : []), "\(format)")
        }
    }

    /// No output at all: a spare that failed (exit 1) passes its status on (its stderr says why);
    /// one that exited 0 without a result is the CLI's "No messages returned" and exit 1.
    @Test func emptyOutput() {
        for format in [PrintConversion.Format.text, .json] {
            var conversion = PrintConversion(format: format, verbose: false, partialMessages: false)
            #expect(conversion.consume([]).isEmpty)
            var end = conversion.finish(exitStatus: 1, signal: nil)
            #expect(end.stdout.isEmpty && end.stderr.isEmpty && end.status == 1)
            conversion = PrintConversion(format: format, verbose: false, partialMessages: false)
            end = conversion.finish(exitStatus: 0, signal: nil)
            #expect(String(decoding: end.stderr, as: UTF8.self) == "Error: No messages returned from query\n" && end.status == 1)
        }
        var stream = PrintConversion(format: .streamJSON, verbose: true, partialMessages: false)
        let end = stream.finish(exitStatus: 1, signal: nil)
        #expect(end.stdout.isEmpty && end.stderr.isEmpty && end.status == 1)
    }

    /// Partial-message lines are dropped for a caller without the flag, and `begun_message_ids`
    /// taken out of the result without moving any other byte.
    @Test func partialMessagesDroppedInPlace() {
        let lines = [
            #"{"type":"system","subtype":"status","status":"requesting","uuid":"u"}"#,
            #"{"type":"stream_event","event":{"type":"message_start"}}"#,
            #"{"type":"result","subtype":"success","begun_message_ids":["a","b"],"result":"x","z":1}"#,
            #"{"type":"result","subtype":"success","result":"x","begun_message_ids":[]}"#,
        ]
        var conversion = PrintConversion(format: .streamJSON, verbose: true, partialMessages: false)
        let out = conversion.consume(Array(lines.joined(separator: "\n").utf8) + [10])
        #expect(
            String(decoding: out, as: UTF8.self)
                == #"{"type":"result","subtype":"success","result":"x","z":1}"# + "\n" + #"{"type":"result","subtype":"success","result":"x"}"# + "\n"
        )
        var kept = PrintConversion(format: .streamJSON, verbose: true, partialMessages: true)
        let all = Array(lines.joined(separator: "\n").utf8) + [10]
        #expect(kept.consume(all) == all)
    }

    /// Text mode for a terminal: CR LF and CR become LF, controls go, colours stay; an error
    /// result is copied to a terminal stderr when stdout is not one.
    @Test func terminals() {
        #expect(PrintConversion.terminalText("a\r\nb\rc\u{07}\u{1B}[31mred\u{1B}[0m\u{1B}]x\u{9B}\td") == "a\nb\ncred\u{1B}[0m]x\td".replacingOccurrences(of: "cred", with: "c\u{1B}[31mred"))
        let line = Array((#"{"type":"result","subtype":"success","is_error":true,"result":"API down  \n"}"# + "\n").utf8)
        var conversion = PrintConversion(format: .text, verbose: false, partialMessages: false, stderrIsTerminal: true)
        #expect(String(decoding: conversion.consume(line), as: UTF8.self) == "API down  \n")
        let end = conversion.finish(exitStatus: 1, signal: nil)
        #expect(String(decoding: end.stderr, as: UTF8.self) == "API down\n")
    }

    /// Two results in one run are set apart the way the CLI's printer does it, and an empty
    /// success is printed (as a newline) only when nothing else was.
    @Test func severalResults() {
        let ok = #"{"type":"result","subtype":"success","result":"one"}"# + "\n"
        let error = #"{"type":"result","subtype":"error_during_execution","is_error":true}"# + "\n"
        let empty = #"{"type":"result","subtype":"success","result":"  "}"# + "\n"
        var conversion = PrintConversion(format: .text, verbose: false, partialMessages: false)
        var out = conversion.consume(Array((ok + error + ok + empty).utf8))
        out += conversion.finish(exitStatus: 0, signal: nil).stdout
        #expect(String(decoding: out, as: UTF8.self) == "one\n\nExecution error\n\none\n")
        conversion = PrintConversion(format: .text, verbose: false, partialMessages: false)
        out = conversion.consume(Array(empty.utf8))
        out += conversion.finish(exitStatus: 0, signal: nil).stdout
        #expect(String(decoding: out, as: UTF8.self) == "  \n")
    }

    /// Numbers as JavaScript prints them (the text printer's limits).
    @Test func javaScriptNumbers() {
        let cases: [(String, String?)] = [
            ("0.00000001", "1e-8"), ("5", "5"), ("0.5", "0.5"), ("100", "100"), ("1.50", "1.5"), (".25", "0.25"),
            ("0.000001", "0.000001"), ("0.0000001", "1e-7"), ("123456789012345678901234", nil), ("123456789012345", "123456789012345"), ("1230000000000000000000000", "1.23e+24"), ("0.000", "0"),
            ("100000000000000000000", "100000000000000000000"), ("0", "0"), ("1e3", nil), ("-1", nil), ("", nil), ("1.2.3", nil),
        ]
        for (text, expected) in cases {
            #expect(PrintRun.javaScriptNumber(text) == expected, "\(text)")
        }
    }

    /// The command lines left to the real CLI.
    @Test func refusals() {
        let refused: [[String]] = [
            ["-p", "x", "--output-format", "stream-json"],  // the CLI: requires --verbose
            ["-p", "x", "--include-partial-messages"],  // the CLI: requires stream-json
            ["-p", "x", "--output-format", "json", "--include-partial-messages"],
            ["-p", "-x hello"],  // an unknown option to the CLI
            ["x"],  // not print mode
            ["mcp", "list", "-p"], ["-p", "mcp"],  // subcommands
            ["-p", "a", "b"],  // two operands
            ["-p", "x", "--input-format", "stream-json", "--output-format", "stream-json", "--verbose"],
            ["-p", "x", "--output-format", "yaml"],
            ["-p", "x", "--fork-session", "--resume", "abc"], ["-pc", "x"], ["-p", "x", "--help"],
            ["-p", "x", "--max-turns", "1.5"], ["-p", "x", "--max-budget-usd", "1e-3"],
            ["-p", "x", "--model"],  // a value missing
        ]
        for arguments in refused {
            #expect(PrintRun.parse(arguments, stdinIsTerminal: false) == nil, "\(arguments)")
        }
        // A resumed or continued session is served: the spare resumes it.
        #expect(PrintRun.parse(["-p", "x", "--resume", "abc"], stdinIsTerminal: false)?.spareArguments.prefix(2) == ["--resume", "abc"])
        #expect(PrintRun.parse(["-p", "x", "-c"], stdinIsTerminal: false)?.spareArguments.first == "-c")
        #expect(PrintRun.parse(["-p"], stdinIsTerminal: true) == nil)
        #expect(PrintRun.parse(["-p", ""], stdinIsTerminal: true) == nil)
    }

    /// What is served: the prompt wherever the grammar puts it, and the spare's command line.
    @Test func accepted() throws {
        var run = try #require(PrintRun.parse(["-p", "--", "-x hello"], stdinIsTerminal: false))
        #expect(run.prompt == "-x hello" && run.format == .text)
        run = try #require(PrintRun.parse(["Say hello", "-p"], stdinIsTerminal: false))
        #expect(run.prompt == "Say hello")
        run = try #require(PrintRun.parse(["--print", "--model=opus", "-p", "/cost"], stdinIsTerminal: false))
        #expect(run.prompt == "/cost")
        #expect(run.spareArguments == ["--model=opus", "--output-format", "stream-json", "--verbose", "--input-format", "stream-json"])
        run = try #require(
            PrintRun.parse(
                ["-p", "q", "--output-format=stream-json", "--verbose", "--include-partial-messages", "--allowedTools", "Bash", "Read", "--max-budget-usd", "0.5"],
                stdinIsTerminal: false
            )
        )
        #expect(run.format == .streamJSON && run.verbose && run.partialMessages && run.limits.maxBudgetUSD == "0.5")
        #expect(
            run.spareArguments == [
                "--allowedTools", "Bash", "Read", "--max-budget-usd", "0.5", "--output-format", "stream-json", "--verbose", "--input-format",
                "stream-json", "--include-partial-messages",
            ]
        )
        run = try #require(PrintRun.parse(["-p"], stdinIsTerminal: false))
        #expect(run.prompt == nil)
        #expect(run.message(stdin: "STDIN TEXT\n") == "STDIN TEXT\n")
        #expect(run.message(stdin: "") == nil)
        run = try #require(PrintRun.parse(["-p", "Say hello"], stdinIsTerminal: false))
        #expect(run.message(stdin: "STDIN TEXT\n") == "Say hello\nSTDIN TEXT\n")
        #expect(run.message(stdin: "") == "Say hello")
        let line = PrintRun.userLine("a \"q\"\n\u{1}\u{2028}é")
        #expect(line.last == UInt8(ascii: "\n") && line.dropLast().allSatisfy { $0 != UInt8(ascii: "\n") }, "one line")
        let object = try JSONSerialization.jsonObject(with: Data(line)) as? [String: Any]
        #expect(object?["type"] as? String == "user" && object?["parent_tool_use_id"] is NSNull)
        #expect((object?["message"] as? [String: Any])?["content"] as? String == "a \"q\"\n\u{1}\u{2028}é")
    }

    /// The JSON reader keeps key order and ranges; members and elements are removed in place.
    @Test func jsonEdits() throws {
        let text = Array(#"{"a":1,"b":{"x":[1,2]},"c":"\u00e9\ud83d\ude00\"","d":[true,false,null]}"#.utf8)
        let value = try #require(JSONText.parse(text))
        guard case .object(let members) = value else { Issue.record("not an object"); return }
        #expect(members.map(\.key) == ["a", "b", "c", "d"])
        #expect(value["c"]?.string == "é😀\"")
        #expect(String(decoding: value.removingMember("a", from: text), as: UTF8.self) == #"{"b":{"x":[1,2]},"c":"\u00e9\ud83d\ude00\"","d":[true,false,null]}"#)
        #expect(String(decoding: value.removingMember("b", from: text), as: UTF8.self) == #"{"a":1,"c":"\u00e9\ud83d\ude00\"","d":[true,false,null]}"#)
        #expect(String(decoding: value.removingMember("d", from: text), as: UTF8.self) == #"{"a":1,"b":{"x":[1,2]},"c":"\u00e9\ud83d\ude00\""}"#)
        #expect(value.removingMember("zz", from: text) == text)
        for bad in [#"{"a":1"#, #"{"a" 1}"#, #"{"a":1}x"#, "[1,]", #""\x""#, ""] {
            #expect(JSONText.parse(Array(bad.utf8)) == nil, "\(bad)")
        }
    }
}

/// How a converted output is compared with a recorded one: text byte for byte; JSON by
/// structure (the same messages in the same order, the same keys in the same order, the same
/// values) except values that differ from run to run, compared by type. The content of the
/// model's own messages (`message`, `event`) comes from the fake model, whose key order varies
/// per process: compared as sets of keys there.
enum OutputComparison {
    static let runToRun: Set<String> = [
        "uuid", "session_id", "cwd", "original_cwd", "memory_paths", "messaging_socket_path", "timestamp", "id", "api_message_id",
        "duration_ms", "duration_api_ms", "ttft_ms", "ttft_stream_ms", "time_to_request_ms", "first_content_frame_ms",
        "begun_message_ids", "tool_use_id", "request_id",
    ]
    static let modelContent: Set<String> = ["message", "event"]

    static func differences(_ got: [UInt8], _ recorded: [UInt8], format: PrintConversion.Format, verbose: Bool) -> [String] {
        switch format {
        case .text:
            return got == recorded ? [] : ["text: \(String(decoding: got, as: UTF8.self).debugDescription) != \(String(decoding: recorded, as: UTF8.self).debugDescription)"]
        case .json:
            let got = normalizingDirectory(got)
            let recorded = normalizingDirectory(recorded)
            guard got.last == 10, recorded.last == 10, got.filter({ $0 == 10 }).count == 1 else { return ["json: not one line"] }
            guard let a = JSONText.parse(got), let b = JSONText.parse(recorded) else { return ["json: does not parse"] }
            if verbose {
                guard case .array(let x) = a, case .array(let y) = b else { return ["json --verbose: not an array"] }
                return messages(x.map(\.value), y.map(\.value))
            }
            return compare(a, b, path: "")
        case .streamJSON:
            guard got.last == recorded.last else { return ["stream-json: last byte differs"] }
            let split = { (bytes: [UInt8]) in normalizingDirectory(bytes).split(separator: 10).map { JSONText.parse(Array($0)) } }
            let x = split(got)
            let y = split(recorded)
            guard !x.contains(nil), !y.contains(nil) else { return ["stream-json: a line does not parse"] }
            return messages(x.compactMap { $0 }, y.compactMap { $0 })
        }
    }

    /// The output with its run's project directory (a fresh temporary directory per recording,
    /// named in `system/init`'s `cwd` and in messages about paths) replaced by `<cwd>`.
    static func normalizingDirectory(_ bytes: [UInt8]) -> [UInt8] {
        let text = String(decoding: bytes, as: UTF8.self)
        guard let start = text.range(of: #""cwd":""#), let end = text[start.upperBound...].firstIndex(of: "\"") else { return bytes }
        let directory = String(text[start.upperBound..<end])
        guard directory.count > 1 else { return bytes }
        return Array(text.replacingOccurrences(of: directory, with: "<cwd>").utf8)
    }

    static func messages(_ got: [JSONText], _ recorded: [JSONText]) -> [String] {
        let kinds = { (values: [JSONText]) in values.map { "\($0["type"]?.string ?? "?")/\($0["subtype"]?.string ?? "")" } }
        guard kinds(got) == kinds(recorded) else { return ["messages: \(kinds(got)) != \(kinds(recorded))"] }
        return zip(got, recorded).enumerated().flatMap { index, pair in compare(pair.0, pair.1, path: "[\(index)]") }
    }

    static func compare(_ a: JSONText, _ b: JSONText, path: String, ordered: Bool = true) -> [String] {
        switch (a, b) {
        case (.object(let x), .object(let y)):
            let keys = (x.map(\.key), y.map(\.key))
            if ordered ? keys.0 != keys.1 : Set(keys.0) != Set(keys.1) { return ["\(path): keys \(keys.0) != \(keys.1)"] }
            return x.flatMap { member -> [String] in
                let other = y.first { $0.key == member.key }!.value
                let here = path + "." + member.key
                if runToRun.contains(member.key) { return kind(member.value) == kind(other) ? [] : ["\(here): type differs"] }
                return compare(member.value, other, path: here, ordered: ordered && !modelContent.contains(member.key))
            }
        case (.array(let x), .array(let y)):
            guard x.count == y.count else { return ["\(path): \(x.count) elements != \(y.count)"] }
            return zip(x, y).enumerated().flatMap { compare($1.0.value, $1.1.value, path: "\(path)[\($0)]", ordered: ordered) }
        default:
            return a == b ? [] : ["\(path): \(a) != \(b)"]
        }
    }

    static func kind(_ value: JSONText) -> String {
        switch value {
        case .object: "object"
        case .array: "array"
        case .string: "string"
        case .number: "number"
        case .bool: "bool"
        case .null: "null"
        }
    }
}
