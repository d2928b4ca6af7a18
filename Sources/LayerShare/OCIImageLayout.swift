import Foundation
import Glibc
import LayerEntries
import LayerStore
import LayerSupport

/// A stack written as an OCI image layout (a folder with `oci-layout`, `index.json` and
/// `blobs/sha256/`), as `skopeo` copies to a registry and `umoci` unpacks: one OCI layer per
/// layerctl layer, root first, an image config whose `rootfs.diff_ids` and `history` follow the
/// layers, and per layer its name, key and packages as `org.layerctl.` annotations. The same
/// stack gives the same digests on any machine: the config's time is the layers' epoch.
public struct OCIImageLayout {
    public struct Result: Codable, Sendable {
        /// `sha256:…` of the image manifest: what a registry would call the image.
        public var manifestDigest: String
        public var layers: [OCILayerBlob]
        public var skippedAttributes: [String]
    }

    public let store: Store
    public var compression: OCICompression = .zstd
    /// The OCI architecture (`amd64`, `arm64`, …).
    public var architecture: String

    public init(store: Store, architecture: String) {
        self.store = store
        self.architecture = architecture
    }

    /// The OCI name of a Linux machine architecture (`uname -m`).
    public static func architecture(machine: String) -> String {
        switch machine {
        case "x86_64": "amd64"
        case "aarch64": "arm64"
        case "i686", "i386": "386"
        case "armv7l", "armv7h": "arm"
        default: machine
        }
    }

    /// Writes the stack ending at `key` into the new folder `path`, tagged `tag`. A folder that is
    /// there already and not empty is never overwritten; the layout appears whole or not at all.
    public func write(_ key: String, to path: String, tag: String) throws -> Result {
        let staging = try FileSystem.folderStaging(for: path, what: "an OCI layout", operation: "write an OCI layout to")
        do {
            // Made here, and so no symlink another user put at that name in a shared folder
            // (/tmp) since: the layout is written into this folder alone, and opened to others
            // only when whole.
            try sys("create", staging) { mkdir(staging, 0o700) }
            let result = try populate(key, staging, tag: tag)
            // Written with sudo into a user's folder, the layout is the user's, as an image is.
            if let owner = FileSystem.userOwner(ofOutput: path) { try FileSystem.changeOwner(ofTree: staging, to: owner) }
            try sys("open", staging) { chmod(staging, 0o755) }
            if FileSystem.exists(path) { try sys("replace", path) { rmdir(path) } }
            try sys("move the layout to", path) { rename(staging, path) }
            return result
        } catch {
            try? FileSystem.removeTree(staging)
            throw StagedPathError(error, staging: staging, path: path)
        }
    }

    private func populate(_ key: String, _ root: String, tag: String) throws -> Result {
        let blobs = root + "/blobs/sha256"
        try FileSystem.makeDirectories(blobs)
        var skipped: [String] = []
        let image = try OCIImage(store: store, key: key, architecture: architecture) { layerKey, record in
            var writer = OCILayerWriter(layer: record.name)
            let scratch = blobs + "/layer-\(layerKey)"
            let blob = try writer.write(store.layerSource(layerKey, record: record), to: scratch, compression: compression)
            skipped += writer.skippedAttributes
            try sys("store the blob of", record.name) { rename(scratch, blobs + "/" + OCIImage.hex(blob.digest)) }
            store.note(blob, of: layerKey)
            return blob
        }
        try FileSystem.writeAtomically(image.config, to: blobs + "/" + OCIImage.hex(image.configDescriptor.digest))
        try FileSystem.writeAtomically(image.manifest, to: blobs + "/" + OCIImage.hex(image.manifestDigest))
        var manifestDescriptor = OCIImage.Descriptor(
            mediaType: OCIImage.MediaType.manifest, digest: image.manifestDigest, size: Int64(image.manifest.count))
        manifestDescriptor.annotations = ["org.opencontainers.image.ref.name": tag]
        let index = OCIImage.Index(schemaVersion: 2, mediaType: OCIImage.MediaType.index, manifests: [manifestDescriptor])
        try FileSystem.writeAtomically(try OCIImage.encode(index), to: root + "/index.json")
        try FileSystem.writeAtomically(Data(#"{"imageLayoutVersion":"1.0.0"}"#.utf8), to: root + "/oci-layout")
        return Result(manifestDigest: image.manifestDigest, layers: image.layers, skippedAttributes: skipped)
    }
}
