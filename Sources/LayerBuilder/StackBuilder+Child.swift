import Alpm
import Foundation
import Glibc
import LayerRecipe
import LayerStore
import LayerSupport

extension StackBuilder {
    /// Builds one layer in a builder child and commits it into the store.
    func buildLayer(
        _ layer: LayerFile, key: String, parent: String?, spec: LayerSpec, boot: Located<BootFlavour>?,
        resolution: Resolution,
        request: TransactionRequest, parentTrees: [String], repositories: [Repository], snapshot: String,
        arch: String, environment: [String: String], started: Date, signatures: SignatureProof,
        repositoryLocations: [String: FileLocation]
    ) throws {
        let store = options.store
        let buildDirectory = try store.makeTemporary("build")
        defer { try? FileSystem.removeTree(buildDirectory) }
        let job = BuildJob(
            layerName: layer.name, buildDirectory: buildDirectory, lowerTrees: parentTrees, arch: arch,
            repos: repositories.map {
                BuildJob.Repo(
                    name: $0.name,
                    servers: $0.expandedServers(arch: arch),
                    signatureLevel: ($0.signatureLevel ?? .pacmanDefault).rawValue,
                    location: repositoryLocations[$0.name]?.description ?? layer.path)
            },
            syncDirectory: snapshot, packageCache: store.packageCache, pacmanLog: store.pacmanLog,
            gpgDirectory: options.keyring, install: request.install, remove: request.remove,
            expected: resolution.install,
            files: layer.files.map { file in
                var inline: String?
                var source: String?
                switch file.content {
                case .inline(let text): inline = text
                case .source(let path): source = path
                }
                return BuildJob.File(
                    path: file.path, mode: file.mode, owner: file.owner, inline: inline, source: source,
                    location: file.location.description)
            },
            run: layer.run.map { BuildJob.Command(command: $0.value, location: $0.location.description) },
            env: environment.sorted { $0.key < $1.key }.map { EnvVariable(name: $0.key, value: $0.value) },
            sourceDateEpoch: options.sourceDateEpoch, isolateNetwork: options.isolateNetwork,
            boot: boot?.value, bootLocation: boot?.location.description)
        try FileSystem.makeDirectories(job.upperDirectory)
        let jobPath = buildDirectory + "/job.json"
        try FileSystem.writeAtomically(try JSONEncoder().encode(job), to: jobPath)

        let result = try runChild(jobPath: jobPath, layer: layer.name)
        let record = LayerRecord(
            formatVersion: LayerSpec.formatVersion, key: key, parent: parent, name: layer.name,
            specDigest: spec.digest, added: result.added, removed: result.removed, installed: result.installed,
            treeBytes: result.treeBytes, fileCount: result.fileCount, treeDigest: result.treeDigest,
            opaqueDirectories: result.opaqueDirectories, signatures: signatures,
            sourceDateEpoch: options.sourceDateEpoch, buildSeconds: Date().timeIntervalSince(started), builtAt: Date())
        try FileSystem.writeAtomically(try record.encoded(), to: buildDirectory + "/layer/layer.json")
        if try !store.commit(buildDirectory + "/layer", as: key) {
            // --no-cache, or a stricter signature policy, rebuilt a stored layer: keep the stored
            // tree if equal (with the record of this build, which proves this policy), else
            // replace it.
            let stored = try store.record(key)
            if stored.treeDigest == record.treeDigest {
                var kept = stored
                kept.signatures = signatures
                try FileSystem.writeAtomically(try kept.encoded(), to: store.layerDirectory(key) + "/layer.json")
            } else {
                observer(BuildEvent(
                    .warning, layer: layer.name,
                    message: "the rebuilt tree differs from the stored one (\(stored.treeDigest.prefix(12)) → \(record.treeDigest.prefix(12))); replacing it"))
                let old = buildDirectory + "/replaced"
                try sys("move aside", store.layerDirectory(key)) { rename(store.layerDirectory(key), old) }
                _ = try store.commit(buildDirectory + "/layer", as: key)
            }
        }
    }

    /// Runs the namespaced builder of the job at `jobPath`, forwards its events, and returns what it built.
    private func runChild(jobPath: String, layer: String) throws -> ChildResult {
        var result: ChildResult?
        let status = try NamespacedWork.run(.build, jobPath: jobPath) { event in
            if event.kind == .finished { result = event.result } else { observer(event) }
        }
        guard status == 0, let result else {
            throw BuildFailure("the builder of layer \(layer) stopped with status \(status)")
        }
        return result
    }
}
