import Foundation
import HTTPTypes
import Hummingbird
import NIOCore
import NIOHTTP1
import PrewarmCore

/// The one place where errors become HTTP: `{"error":{"code":"...","message":"..."}}`.
extension PrewarmError: HTTPResponseError {
    public var status: HTTPResponse.Status {
        switch code {
        case .routeNotFound, .poolNotFound: .notFound
        case .badJSON, .badRequest: .badRequest
        case .headersTooLarge: .requestHeaderFieldsTooLarge
        case .clientGone: HTTPResponse.Status(code: 499, reasonPhrase: "Client Closed Request")
        case .claimRefused: .conflict
        case .bodyTooLarge: .contentTooLarge
        case .forbidden: .forbidden
        case .noCapacity, .waitTimeout, .memoryExhausted, .rateLimited, .tooManyConnections: .tooManyRequests
        case .poolFailing, .draining, .startFailed, .runNotServed: .serviceUnavailable
        default: .internalServerError
        }
    }

    public var headers: HTTPFields {
        var headers: HTTPFields = [.contentType: "application/json"]
        if let retryAfter { headers[.retryAfter] = String(retryAfter) }
        return headers
    }

    public func response(from request: Request, context: some RequestContext) throws -> Response {
        Response(status: status, headers: headers, body: .init(byteBuffer: ByteBuffer(bytes: jsonBody)))
    }

    var jsonBody: Data {
        var error = ["code": code.description, "message": message]
        if let reason { error["reason"] = reason }
        if let field { error["field"] = field }
        let body = ["error": error]
        return (try? JSONSerialization.data(withJSONObject: body, options: [.sortedKeys])) ?? Data()
    }
}

/// Turns every error that leaves a handler into the API's JSON error shape; a CLI's stderr
/// tail in it only for the daemon's uid and root.
struct ErrorMiddleware: RouterMiddleware {
    typealias Context = PrewarmRequestContext
    let connections: Connections

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        do {
            return try await next(request, context)
        } catch var error as PrewarmError {
            if !StderrTail.mayRead(uid: await connections.of(context.channel)?.uid) { error.message = StderrTail.redacted(error.message) }
            return try error.response(from: request, context: context)
        } catch let error as HTTPError where error.status == .notFound {
            return try PrewarmError(.routeNotFound, "no endpoint \(request.method) \(request.uri.path); see README.md for the API")
                .response(from: request, context: context)
        } catch let error as HTTPError where error.status == .contentTooLarge {
            return try PrewarmError(.bodyTooLarge, "the request body is too large").response(from: request, context: context)
        } catch is NIOTooManyBytesError {
            return try PrewarmError(.bodyTooLarge, "the request body is too large").response(from: request, context: context)
        } catch let error as HTTPError where error.status == .methodNotAllowed {
            return try PrewarmError(.routeNotFound, "\(request.method) is not allowed on \(request.uri.path); see README.md for the API")
                .response(from: request, context: context)
        } catch let error as HTTPParserError {
            // The client's framing (a bad chunk, a body cut short): its fault, answered by
            // HTTPRequestGuard, which also closes the connection.
            context.logger.debug("malformed request body", metadata: ["error": "\(error)"])
            return try HTTPRequestGuard.refusal(for: error).response(from: request, context: context)
        } catch let error as ChannelError {
            // The client went away mid-request: nobody to answer.
            context.logger.debug("the connection ended mid-request", metadata: ["error": "\(error)"])
            return try PrewarmError(.badRequest, "the connection ended before the request was complete").response(from: request, context: context)
        } catch {
            context.logger.error("unexpected error", metadata: ["error": "\(error)"])
            return try PrewarmError(.internal, "internal error: \(error)").response(from: request, context: context)
        }
    }
}
