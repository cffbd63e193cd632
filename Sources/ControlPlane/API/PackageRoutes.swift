import Foundation
import HTTPTypes
import Hummingbird
import Logging
import NIOCore
import OpAMPServer

/// Serves package files to agents at `/v1/package-files/<sha256>`: the download token of the offer
/// (`Authorization: Bearer …`) opens that one file. Hummingbird's file middleware does the rest: ranges
/// (an interrupted download resumes), `Content-Length`, `ETag` and `If-Range`, streamed from disk.
struct PackageDownloadMiddleware: RouterMiddleware {
    typealias Context = APIContext
    static let prefix = "/v1/package-files"
    let repository: PackageRepository
    let files: FileMiddleware<APIContext, LocalFileSystem>

    init(repository: PackageRepository) {
        self.repository = repository
        self.files = FileMiddleware(
            repository.filesDirectory.path,
            urlBasePath: Self.prefix,
            searchForIndexHtml: false,
            logger: Logger(label: "tailplane.packages")
        )
    }

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
        var request = request
        if let range = request.headers[.range] {
            // Ranges the file middleware would answer wrongly: one that starts at or past the end (416, so an
            // agent that has everything knows it), and a suffix (`bytes=-N`, the last N bytes).
            let size =
                (try? FileManager.default.attributesOfItem(atPath: self.repository.file(sha256: hash).path))?[
                    .size
                ] as? Int
            if let size, range.hasPrefix("bytes="), !range.contains(",") {
                let spec = range.dropFirst(6)
                if spec.hasPrefix("-"), let suffix = Int(spec.dropFirst()), suffix > 0 {
                    var head = request.head
                    head.headerFields[.range] = "bytes=\(max(0, size - suffix))-"
                    request = Request(head: head, body: request.body)
                } else if let start = Int(spec.prefix { $0 != "-" }), start >= size {
                    return Response(
                        status: .rangeNotSatisfiable,
                        headers: [.contentRange: "bytes */\(size)", .acceptRanges: "bytes"]
                    )
                }
            }
        }
        return try await self.files.handle(request, context: context) { _, _ in
            throw HTTPError(.notFound)
        }
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
                    remote: context.remote
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
                    remote: context.remote
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
        }
        v1.post("/packages/:name/:version/rollout") { request, context -> JSON<ApplyResult> in
            let actor = try self.authorize(request, .write)
            _ = try self.repository()
            let body = try await Self.body(
                request,
                context,
                as: RolloutRequest.self,
                expected: #"{"tiers": ["sampling", "lb"], "message", "supersede", "dryRun"}"#
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
                    actor: actor,
                    remote: context.remote
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
