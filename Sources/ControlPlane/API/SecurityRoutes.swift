import Foundation
import Hummingbird
import OpAMPProtocol
import OpAMPServer

/// A new enrolment token: the record, and the secret (shown only in this response).
struct CreatedEnrolmentToken: Encodable, Sendable {
    var token: EnrolmentToken
    var secret: String
}

/// An offer made through the API.
struct OfferResult: Encodable, Sendable {
    var instanceUID: String
    var offered: Bool
    var detail: String
}

extension ControlPlaneAPI {
    /// The agent credential routes: enrolment tokens, revocation, certificate requests and offers.
    func addSecurityRoutes(to v1: RouterGroup<APIContext>) {
        self.addRotationRoutes(to: v1)
        struct CreateToken: Decodable {
            var name: String
            var tier: String?
            var expiresInSeconds: Double?
        }
        v1.get("/enrolment-tokens") { request, _ -> JSON<[EnrolmentToken]> in
            _ = try self.authorize(request, .admin)
            return JSON(try self.requireAccess().enrolmentTokens())
        }
        v1.post("/enrolment-tokens") { request, context -> JSON<CreatedEnrolmentToken> in
            let actor = try self.authorize(request, .admin)
            let access = try self.requireAccess()
            let body: CreateToken
            do {
                body = try await request.decode(as: CreateToken.self, context: context)
            } catch {
                throw APIError(
                    .badRequest,
                    code: "bad_request",
                    message: "expected {\"name\": TEXT, \"tier\": \"sampling\"|\"lb\", \"expiresInSeconds\": N}"
                )
            }
            let tier = try body.tier.map(Self.tier)
            if let seconds = body.expiresInSeconds, seconds <= 0 || !seconds.isFinite {
                throw APIError(.badRequest, code: "bad_request", message: "expiresInSeconds must be positive")
            }
            guard !body.name.trimmingCharacters(in: .whitespaces).isEmpty, body.name.count <= 200 else {
                throw APIError(.badRequest, code: "bad_request", message: "a token needs a name of 1 to 200 characters")
            }
            let (token, secret) = try access.createEnrolmentToken(
                name: body.name,
                tier: tier,
                expiresIn: body.expiresInSeconds,
                actor: actor
            )
            try self.audit(actor, "enrolment-token.create", "token \(token.id) (\(token.name))", context)
            return JSON(CreatedEnrolmentToken(token: token, secret: secret), status: .created)
        }
        v1.delete("/enrolment-tokens/:id") { request, context -> Response in
            let actor = try self.authorize(request, .admin)
            let id = context.parameters.get("id") ?? ""
            guard try self.requireAccess().revokeEnrolmentToken(id: id) else {
                throw APIError(.notFound, code: "not_found", message: "no enrolment token \(id)")
            }
            try self.audit(actor, "enrolment-token.revoke", "token \(id)", context)
            return Response(status: .noContent)
        }
        struct Revoke: Decodable { var reason: String? }
        v1.post("/agents/:uid/revoke") { request, context -> JSON<RevocationRecord> in
            let actor = try self.authorize(request, .admin)
            let uid = try Self.uid(context)
            let body = (try? await request.decode(as: Revoke.self, context: context)) ?? Revoke(reason: nil)
            let record = try self.requireAccess().revokeAgent(
                uid.description,
                reason: body.reason ?? "revoked through the API",
                actor: actor
            )
            self.controller.registry.disconnect(uid, reason: "credentials revoked")
            try self.audit(actor, "agent.revoke", "agent \(uid): \(record.reason)", context)
            return JSON(record)
        }
        v1.get("/revocations") { request, _ -> JSON<[RevocationRecord]> in
            _ = try self.authorize(request, .read)
            return JSON(try self.requireAccess().revocations())
        }
        v1.get("/certificate-requests") { request, _ -> JSON<[CertificateRequestRecord]> in
            _ = try self.authorize(request, .read)
            return JSON(try self.requireAccess().certificateRequests())
        }
        for approve in [true, false] {
            v1.post("/certificate-requests/:uid/\(approve ? "approve" : "deny")") {
                request,
                context -> JSON<OfferResult> in
                let actor = try self.authorize(request, .admin)
                let uid = try Self.uid(context)
                let offered: OfferedCertificate?
                do {
                    offered = try self.requireAccess().decide(uid.description, approve: approve, actor: actor)
                } catch {
                    throw APIError.from(error)
                }
                try self.audit(actor, approve ? "csr.approve" : "csr.deny", "agent \(uid)", context)
                guard let offered else {
                    return JSON(OfferResult(instanceUID: uid.description, offered: false, detail: "denied"))
                }
                var result = try self.offer(offered, to: uid)
                if !result.offered, self.controller.leadership != nil, self.controller.registry.agent(uid) == nil {
                    // Several replicas: the request came through another one, which offers the certificate.
                    result.detail =
                        "certificate approved; the replica the agent is connected to offers it within seconds"
                }
                return JSON(result)
            }
        }
        v1.post("/agents/:uid/certificate") { request, context -> JSON<OfferResult> in
            let actor = try self.authorize(request, .admin)
            let uid = try Self.uid(context)
            let tier = await self.controller.agents().first { $0.instanceUID == uid.description }?.tier
            let certificate: OfferedCertificate
            do {
                certificate = try self.requireAccess().issueCertificate(
                    for: uid,
                    tier: tier == .unmanaged ? nil : tier
                )
            } catch {
                throw APIError.from(error)
            }
            let result = try self.offer(certificate, to: uid)
            try self.audit(actor, "agent.certificate", "agent \(uid): \(result.detail)", context)
            return JSON(result)
        }
    }

    /// Certificate rotation routes.
    func addRotationRoutes(to v1: RouterGroup<APIContext>) {
        struct StartRotation: Decodable {
            var agents: [String]?
            var tier: String?
            var batchSize: Int?
        }
        v1.post("/certificate-rotations") { request, context -> JSON<CertificateRotation> in
            let actor = try self.authorize(request, .admin)
            let body: StartRotation
            do {
                body = try await request.decode(as: StartRotation.self, context: context)
            } catch {
                throw APIError(
                    .badRequest,
                    code: "bad_request",
                    message:
                        "expected {\"agents\": [UID…], \"tier\": \"sampling\"|\"lb\", \"batchSize\": N} (all optional)"
                )
            }
            let tier = try body.tier.map(Self.tier)
            do {
                let rotation = try await self.controller.startRotation(
                    agents: body.agents,
                    tier: tier,
                    batchSize: body.batchSize,
                    actor: actor
                )
                try self.audit(
                    actor,
                    "certificates.rotate",
                    "rotation \(rotation.id): \(rotation.waiting.count) agents",
                    context
                )
                return JSON(rotation, status: .created)
            } catch {
                throw APIError.from(error)
            }
        }
        v1.get("/certificate-rotations/current") { request, _ -> JSON<CertificateRotation> in
            _ = try self.authorize(request, .read)
            guard let rotation = try self.requireAccess().rotation() else {
                throw APIError(.notFound, code: "not_found", message: "no certificate rotation yet")
            }
            return JSON(rotation)
        }
        v1.post("/certificate-rotations/current/abort") { request, context -> JSON<CertificateRotation> in
            let actor = try self.authorize(request, .admin)
            do {
                let rotation = try await self.controller.abortRotation(actor: actor)
                try self.audit(actor, "certificates.rotate.abort", "rotation \(rotation.id)", context)
                return JSON(rotation)
            } catch {
                throw APIError.from(error)
            }
        }
    }

    func requireAccess() throws -> AgentAccess {
        guard let access = self.controller.access else {
            throw APIError(
                .conflict,
                code: "no_access_control",
                message: "this policyd runs without agent credential management"
            )
        }
        return access
    }

    /// Offers a certificate in OpAMP connection settings (endpoint and heartbeat always set).
    func offer(_ certificate: OfferedCertificate, to uid: InstanceUID) throws -> OfferResult {
        guard let offer = self.controller.registry.certificateOffer(certificate) else {
            throw APIError(
                .conflict,
                code: "no_endpoint",
                message: "policyd has no --advertised-endpoint, so it cannot offer connection settings"
            )
        }
        let problem = self.controller.registry.offerConnectionSettings(offer, to: uid)
        return OfferResult(
            instanceUID: uid.description,
            offered: problem == nil,
            detail: problem ?? "certificate offered; the agent reconnects with it"
        )
    }

    func audit(_ actor: String, _ action: String, _ detail: String, _ context: APIContext) throws {
        try self.store.appendAudit(
            AuditEntry(time: Date(), actor: actor, action: action, detail: detail, remote: context.remote)
        )
    }

    static func uid(_ context: APIContext) throws -> InstanceUID {
        guard let text = context.parameters.get("uid"), let uid = InstanceUID(uuidString: text) else {
            throw APIError(.badRequest, code: "bad_request", message: "an agent is named by its instance UID (a UUID)")
        }
        return uid
    }

    static func tier(_ text: String) throws -> AgentTier {
        guard let tier = AgentTier(name: text) else {
            throw APIError(.badRequest, code: "bad_request", message: "tier is `sampling` or `lb`")
        }
        return tier
    }
}
