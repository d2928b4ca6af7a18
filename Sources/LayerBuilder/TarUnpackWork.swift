import CLayerSupport
import Foundation
import Glibc
import LayerShare
import LayerSupport

/// A pulled layer's tar, a stranger's data, parsed in a confined child: the `unpack` role of
/// `NamespacedWork`. layerctl decompresses the blob and takes its diff_id itself; the child reads
/// the plain tar on its stdin (`OCILayerReader.unpackPlainTar`) and writes the tree.
///
/// The child is pid 1 of new mount, pid, ipc, uts and network namespaces, without a network. Its
/// root is a tmpfs that holds nothing but the tree, at `/tree`, and the layers below, read-only, at
/// `/lower/N`, which it needs for the folders a tar only implies and the whiteouts that hide
/// nothing, with their opaque folder indexes at `/opaque/N`: no path of the host is there to
/// open, chown or chmod. Landlock lets it write the tree alone. It keeps the capabilities an unpack
/// needs (owners, modes, device nodes, file capabilities) and no other, with no_new_privs and the
/// build's seccomp filter. What takes CAP_SYS_ADMIN, the `trusted.*` attributes and opaque markers,
/// it hands back (`DeferredAttribute`), and layerctl sets them once it is gone. The files' digests
/// are not its to give either: layerctl's scan of the tree takes them.
package struct TarUnpackWork: TarUnpacker {
    package init() {}

    /// What the child is given, in a file of the pull's scratch folder.
    struct Job: Codable {
        var tree: String
        var lower: [LowerTree]
        /// An empty folder, where the child mounts its root.
        var root: String
        var name: String
        /// What the unpack leaves free on the tree's filesystem, watched at `/tree`.
        var reserve: DiskReserve
    }

    /// The capabilities an unpack uses: owners, modes and times of entries that are not root's or
    /// not writable, setuid bits, device nodes and whiteouts, and `security.capability`.
    static let capabilities: [Int32] = [CAP_CHOWN, CAP_DAC_OVERRIDE, CAP_FOWNER, CAP_FSETID, CAP_MKNOD, CAP_SETFCAP]

    package func start(tree: String, lower: [LowerTree], scratch: String, name: String) throws -> any TarUnpack {
        let root = scratch + "/unpack-root"
        try? FileSystem.removeTree(root)
        try sys("create", root) { mkdir(root, 0o700) }
        let jobPath = scratch + "/unpack-job.json"
        let job = Job(tree: tree, lower: lower, root: root, name: name, reserve: try DiskReserve(for: tree).seen(at: "/tree"))
        try FileSystem.writeFile(try JSONEncoder().encode(job), to: jobPath)
        return try Child(jobPath: jobPath, blob: name)
    }

    /// The parent's side of one child: a `NamespacedWork.Session` whose stdin takes the tar, and
    /// whose one answer is the unpack's.
    final class Child: TarUnpack {
        private let session: NamespacedWork.Session
        private let blob: String

        init(jobPath: String, blob: String) throws {
            session = try NamespacedWork.Session(.unpack, jobPath: jobPath, network: false)
            self.blob = blob
        }

        var input: Int32 { session.input }
        func endInput() { session.endInput() }
        func stop() { session.kill() }

        func wait() throws -> [DeferredAttribute] {
            endInput()
            let answer: BuildEvent
            do {
                answer = try session.answer(nil)
            } catch let failure as BuildFailure {
                // The work went wrong, not an entry it named: say which blob it was unpacking.
                throw BuildFailure("unpacking the layer blob \(blob): \(failure.message)", code: failure.code, cause: failure.cause)
            }
            session.end()
            if answer.kind == .failed { throw answer.failure }
            return answer.attributes ?? []
        }
    }

    // MARK: The child's side

    /// The `unpack` role: confines itself, unpacks the tar on stdin, and reports.
    static func work(_ request: NamespacedWork.Request) -> Int32 {
        let events = EventPipe(layer: "")
        // The folders a tar only implies, with no folder below to take after, are 0755 whatever
        // the umask of whoever runs layerctl: the same blob gives the same tree on every machine.
        umask(0o022)
        do {
            try NamespacedWork.dieWithParent(request)
            let job = try NamespacedWork.readJob(Job.self, at: request.jobPath)
            try NamespacedWork.settleNamespaces(hostname: "layerctl-unpack", network: false)
            let lower = try confine(job)
            _ = fcntl(NamespacedWork.eventDescriptor, F_SETFD, FD_CLOEXEC)
            var finished = BuildEvent(.finished, layer: "")
            finished.attributes = try OCILayerReader(stream: STDIN_FILENO, name: job.name).unpackPlainTar(
                into: "/tree", lower: lower, reserve: job.reserve)
            events.send(finished)
            return 0
        } catch {
            events.send(BuildEvent(failure: error, layer: ""))
            return 1
        }
    }

    /// A root of its own with the tree and the layers below in it, Landlock, and the
    /// capabilities an unpack needs; returns the lower trees as they are in that root.
    private static func confine(_ job: Job) throws -> [LowerTree] {
        try Mounter.mount("tmpfs", at: job.root, type: "tmpfs", options: "mode=0755,size=64k,nosuid,nodev,noexec")
        try sys("create", "/tree") { mkdir(job.root + "/tree", 0o755) }
        try sys("create", "/lower") { mkdir(job.root + "/lower", 0o755) }
        try sys("create", "/opaque") { mkdir(job.root + "/opaque", 0o755) }
        try Mounter.bind(job.tree, at: job.root + "/tree")
        var lower: [LowerTree] = []
        // The folders that hold the lower trees' opaque folder indexes, read-only at /opaque/N.
        var indexFolders: [String: String] = [:]
        for (index, tree) in job.lower.enumerated() {
            let path = "/lower/\(index)"
            try sys("create", path) { mkdir(job.root + path, 0o755) }
            try Mounter.bind(tree.path, at: job.root + path, readOnly: true)
            var shown = LowerTree(path: path)
            if let file = tree.opaqueIndex {
                let folder = (file as NSString).deletingLastPathComponent
                if indexFolders[folder] == nil {
                    let mounted = "/opaque/\(indexFolders.count)"
                    try sys("create", mounted) { mkdir(job.root + mounted, 0o755) }
                    try Mounter.bind(folder, at: job.root + mounted, readOnly: true)
                    indexFolders[folder] = mounted
                }
                shown.opaqueIndex = indexFolders[folder]! + "/" + (file as NSString).lastPathComponent
            }
            lower.append(shown)
        }
        let pivoted = lc_pivot_root(job.root)
        if pivoted != 0 { throw SystemError("make the root of the unpack", job.root, errno: pivoted) }
        let confined = Confinement.landlock(readable: ["/lower", "/opaque"], writable: ["/tree"])
        // Without Landlock, the root of its own still holds nothing of the host's.
        if confined != 0 && confined != EOPNOTSUPP { throw SystemError("confine with Landlock", "the unpack", errno: confined) }
        try Confinement.dropPrivileges(keeping: capabilities, scoping: false)
        return lower
    }
}
