import Foundation
import HTTPTypes
import Hummingbird
import Logging
import NIOCore
import OpAMPServer
import _NIOFileSystem

/// Serves package files to agents at `/v1/package-files/<sha256>`: the download token of the offer
/// (`Authorization: Bearer …`, or `?token=`) opens that one file. One range per request (`bytes=A-B`,
/// `bytes=A-`, `bytes=-N`), so an interrupted download resumes; `If-Range` against the `ETag` (the hash);
/// `Content-Length` always. The file is read one chunk at a time and the next chunk only once the connection
/// took the last one, so memory per download is a few chunks whatever the package's size. Chunks are small:
/// with a thousand agents downloading at once, memory is the number of downloads times a few chunks (with
/// Hummingbird's file middleware, 128 KiB chunks, a thousand downloads held 2.2 GB; docs/performance.md).
struct PackageDownloadMiddleware: RouterMiddleware {
    typealias Context = APIContext
    static let prefix = "/v1/package-files"
    /// Bytes read and written at a time (measured: 256 KiB held 2 GB for a thousand downloads, 64 KiB 1 GB).
    static let chunk = 64 * 1024
    let repository: PackageRepository

    func handle(_ request: Request, context: APIContext, next: (Request, APIContext) async throws -> Response)
        async throws -> Response
    {
        let path = request.uri.path
        guard path.hasPrefix(Self.prefix + "/") else { return try await next(request, context) }
        let hash = String(path.dropFirst(Self.prefix.count + 1))
        guard hash.count == 64, hash.allSatisfy({ "0123456789abcdef".contains($0) }) else {
            throw APIError(.notFound, code: "not_found", message: "no such package file")
        }
        guard request.method == .get || request.method == .head else {
            throw APIError(.methodNotAllowed, code: "method_not_allowed", message: "package files are read with GET")
        }
        let header = request.headers[.authorization] ?? ""
        let token =
            header.hasPrefix("Bearer ") ? String(header.dropFirst(7)) : request.uri.queryParameters.get("token") ?? ""
        guard self.repository.acceptsDownloadToken(token, sha256: hash) else {
            throw APIError(
                .unauthorized,
                code: "unauthorized",
                message: "a package download needs the token offered with it (DownloadableFile.headers)"
            )
        }
        // A file another replica stored is copied here first (once, however many agents ask at the same time).
        let present: Bool
        do { present = try await self.repository.ensureLocal(sha256: hash) } catch {
            context.logger.warning(
                "cannot copy a package file from the database",
                metadata: ["sha256": "\(hash)", "error": "\(error)"]
            )
            return try APIError(
                .serviceUnavailable,
                code: "package_unavailable",
                message: "this replica cannot serve the package file yet: retry in a minute",
                retryAfterSeconds: 60
            ).response(from: request, context: context)
        }
        guard present else { throw APIError(.notFound, code: "not_found", message: "no such package file") }
        let file = self.repository.file(sha256: hash).path
        guard let size = (try? FileManager.default.attributesOfItem(atPath: file))?[.size] as? Int else {
            throw APIError(.notFound, code: "not_found", message: "no such package file")
        }
        let etag = "\"\(hash)\""
        var headers: HTTPFields = [
            .contentType: "application/octet-stream", .acceptRanges: "bytes", .eTag: etag,
            .cacheControl: "private, max-age=31536000, immutable",
        ]
        var range = 0..<size
        var status = HTTPResponse.Status.ok
        // A range that does not match the ETag in If-Range asks for the whole file.
        // Range applies to GET only (RFC 9110 §14.2).
        if request.method == .get, let text = request.headers[.range],
            request.headers[.ifRange].map({ $0 == etag }) ?? true
        {
            switch Self.range(text, size: size) {
            case .whole: break
            case .part(let part):
                range = part
                status = .partialContent
                headers[.contentRange] = "bytes \(part.lowerBound)-\(part.upperBound - 1)/\(size)"
            case .unsatisfiable:
                return Response(
                    status: .rangeNotSatisfiable,
                    headers: [.contentRange: "bytes */\(size)", .acceptRanges: "bytes"]
                )
            }
        }
        headers[.contentLength] = String(range.count)
        if request.method == .head || range.isEmpty { return Response(status: status, headers: headers) }
        let bounds = range
        return Response(
            status: status,
            headers: headers,
            body: ResponseBody(contentLength: bounds.count) { writer in
                try await FileSystem.shared.withFileHandle(forReadingAt: FilePath(file)) { handle in
                    var offset = bounds.lowerBound
                    while offset < bounds.upperBound {
                        let length = min(Self.chunk, bounds.upperBound - offset)
                        let chunk = try await handle.readChunk(
                            fromAbsoluteOffset: Int64(offset),
                            length: .bytes(Int64(length))
                        )
                        // The file shrank under us: fail the response rather than send less than Content-Length.
                        guard chunk.readableBytes > 0 else {
                            throw APIError(
                                .internalServerError,
                                code: "short_read",
                                message: "the package file is shorter than expected"
                            )
                        }
                        offset += chunk.readableBytes
                        // Suspends while the connection cannot take more: the next read waits for it.
                        try await writer.write(chunk)
                    }
                }
                try await writer.finish(nil)
            }
        )
    }

    enum RangeAnswer: Equatable {
        case whole
        case part(Range<Int>)
        case unsatisfiable
    }

    /// One `bytes=` range of a file of `size` bytes. Several ranges, or a header that is not a byte range, get
    /// the whole file (RFC 9110 lets a server ignore Range).
    static func range(_ text: String, size: Int) -> RangeAnswer {
        guard text.hasPrefix("bytes="), !text.contains(",") else { return .whole }
        let spec = text.dropFirst(6).trimmingCharacters(in: .whitespaces)
        let parts = spec.split(separator: "-", maxSplits: 1, omittingEmptySubsequences: false)
        guard parts.count == 2 else { return .whole }
        if parts[0].isEmpty {
            guard let suffix = Int(parts[1]), suffix > 0 else { return .whole }
            return size == 0 ? .unsatisfiable : .part(max(0, size - suffix)..<size)
        }
        guard let start = Int(parts[0]), start >= 0 else { return .whole }
        guard start < size else { return .unsatisfiable }
        if parts[1].isEmpty { return .part(start..<size) }
        guard let end = Int(parts[1]), end >= start else { return .whole }
        // `end` may be anything up to Int.max: compared, never incremented past the file.
        return .part(start..<(end >= size - 1 ? size : end + 1))
    }
}

/// A package and who uses it.
public struct PackageDetail: Sendable, Hashable, Codable {
    /// The record.
    public var package: PackageRecord
    /// Agents that run it or are offered it.
    public var agents: [String]
    /// Versions that pin it, newest first.
    public var versions: [Int]
}

extension ControlPlaneAPI {
    func addPackageRoutes(to v1: RouterGroup<APIContext>) {
        v1.get("/packages") { request, _ -> JSON<[PackageRecord]> in
            _ = try self.authorize(request, .read)
            return JSON(try self.repository().records())
        }
        // The public key agents pin to verify package signatures; public by nature, so no token needed.
        v1.get("/packages/signing-key") { _, _ -> Response in
            Response(
                status: .ok,
                headers: [.contentType: "application/x-pem-file"],
                body: .init(byteBuffer: ByteBuffer(string: try self.repository().publicKeyPEM))
            )
        }
        v1.put("/packages/:name/:version") { request, context -> JSON<PackageRecord> in
            let actor = try self.authorize(request, .write)
            let repository = try self.repository()
            let name = context.parameters.get("name") ?? ""
            let version = context.parameters.get("version") ?? ""
            let kindText = request.uri.queryParameters.get("type") ?? "top-level"
            guard let kind = PackageKind(rawValue: kindText) else {
                throw APIError(
                    .badRequest,
                    code: "bad_request",
                    message: "type is `top-level` or `addon`, not `\(kindText)`"
                )
            }
            if let length = request.headers[.contentLength].flatMap(Int64.init), length > repository.maxPackageBytes {
                throw APIError(
                    .contentTooLarge,
                    code: "too_large",
                    message: "the package is over \(repository.maxPackageBytes) bytes"
                )
            }
            do {
                let ingested = try await repository.ingest(
                    name: name,
                    version: version,
                    kind: kind,
                    uploader: actor,
                    now: Date(),
                    body: request.body
                )
                await self.controller.auditUpload(
                    ingested.record,
                    created: ingested.created,
                    actor: actor,
                    remote: self.caller(request, context)
                )
                return JSON(ingested.record, status: ingested.created ? .created : .ok)
            } catch {
                throw APIError.from(error)
            }
        }
        v1.get("/packages/:name/:version") { request, context -> JSON<PackageDetail> in
            _ = try self.authorize(request, .read)
            let name = context.parameters.get("name") ?? ""
            let version = context.parameters.get("version") ?? ""
            guard let record = try self.repository().record(name: name, version: version) else {
                throw APIError(.notFound, code: "not_found", message: "no package \(name) \(version)")
            }
            let agents = await self.controller.agentsUsing(record)
            let versions = try self.store.versions(limit: 1000).filter { version in
                guard let pins = version.packages else { return false }
                return pins.loadBalancing.contains(record.pin) || pins.sampling.contains(record.pin)
            }.map(\.number)
            return JSON(PackageDetail(package: record, agents: agents, versions: versions))
        }
        v1.delete("/packages/:name/:version") { request, context -> Response in
            let actor = try self.authorize(request, .write)
            _ = try self.repository()
            do {
                try await self.controller.deletePackage(
                    name: context.parameters.get("name") ?? "",
                    version: context.parameters.get("version") ?? "",
                    actor: actor,
                    remote: self.caller(request, context)
                )
            } catch {
                throw APIError.from(error)
            }
            return Response(status: .noContent)
        }
        struct RolloutRequest: Decodable {
            var tiers: [String]?
            var message: String?
            var supersede: Bool?
            var dryRun: Bool?
            var acceptChanges: [String]?
        }
        v1.post("/packages/:name/:version/rollout") { request, context -> JSON<ApplyResult> in
            let actor = try self.authorize(request, .write)
            _ = try self.repository()
            let body = try await Self.body(
                request,
                context,
                as: RolloutRequest.self,
                expected: #"{"tiers": ["sampling", "lb"], "message", "supersede", "dryRun", "acceptChanges": ["id"]}"#
            )
            var tiers: [AgentTier] = []
            for text in body.tiers ?? [] {
                guard let tier = AgentTier(name: text) else {
                    throw APIError(
                        .badRequest,
                        code: "bad_request",
                        message: "a tier is `sampling` or `lb`, not `\(text)`"
                    )
                }
                if !tiers.contains(tier) { tiers.append(tier) }
            }
            do {
                let result = try await self.controller.rolloutPackage(
                    name: context.parameters.get("name") ?? "",
                    version: context.parameters.get("version") ?? "",
                    tiers: tiers,
                    message: body.message,
                    supersede: body.supersede ?? false,
                    dryRun: body.dryRun ?? false,
                    acceptChanges: body.acceptChanges ?? [],
                    actor: actor,
                    remote: self.caller(request, context)
                )
                return JSON(result, status: result.result == "created" ? .created : .ok)
            } catch {
                throw APIError.from(error)
            }
        }
    }

    /// The repository, or 404 when this policyd manages no packages.
    func repository() throws -> PackageRepository {
        guard let repository = self.controller.packages else {
            throw APIError(.notFound, code: "not_found", message: "this policyd has no package repository")
        }
        return repository
    }
}
