import Foundation

/// How an OCI layer blob is compressed. zstd is the default; gzip is for clients older than
/// zstd layers (Docker before 23).
public enum OCICompression: String, Sendable, CaseIterable {
    case zstd, gzip

    /// The layer's media type in an OCI image manifest.
    public var mediaType: String { "application/vnd.oci.image.layer.v1.tar+\(rawValue)" }
}

/// One layer as an OCI blob: what an image manifest and config say of it.
public struct OCILayerBlob: Sendable, Equatable, Codable {
    /// `sha256:…` of the blob as stored and sent: the compressed tar.
    public var digest: String
    /// `sha256:…` of the uncompressed tar: the image config's `rootfs.diff_ids` entry.
    public var diffID: String
    public var size: Int64
    public var mediaType: String
}

/// The OCI image spec's whiteouts: `.wh.NAME` hides NAME of the layers below, and `.wh..wh..opq`
/// in a folder hides everything below it (overlayfs's opaque folder).
enum Whiteout {
    static let prefix = Array(".wh.".utf8)
    static let opaque = Array(".wh..wh..opq".utf8)

    static func hiding(_ name: [UInt8]) -> [UInt8] { prefix + name }

    /// The name a whiteout entry hides, or nil when `name` is no whiteout.
    static func hidden(by name: [UInt8]) -> [UInt8]? {
        guard name.count > prefix.count, name.starts(with: prefix), name != opaque else { return nil }
        return Array(name.dropFirst(prefix.count))
    }

    /// aufs's own bookkeeping at a layer's root: `.wh..wh.aufs`, `.wh..wh.orph/` and
    /// `.wh..wh.plnk/`, which images Docker made on aufs hold, and the hard links of files linked
    /// across layers point into `.wh..wh.plnk/`. Docker drops it, and so does a pull: such a name
    /// is content while the blob unpacks (so the hard links find their files), and removed after.
    /// `parts` are an entry's name's components.
    static func isAufsMetadata(_ parts: [[UInt8]]) -> Bool {
        guard let first = parts.first, first.starts(with: prefix + prefix) else { return false }
        return !(parts.count == 1 && first == opaque)
    }
}
