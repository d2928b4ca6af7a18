import LayerSupport

/// How long a path in a layer may be: 3,072 bytes, spelled as the running system spells it
/// (`/usr/bin/ls` is 11). Linux names a file with at most 4,096 bytes (PATH_MAX), and layerctl
/// reaches a layer's files by their path below the store's folder, which leaves that folder the
/// other 1,024 (`Store` holds its root to less). The longest path of an Arch system is some 250
/// bytes.
///
/// The limit also bounds how deep a tree goes, to 1,536 folders. A `run:` step, a pulled layer or a
/// crafted image can nest folders without end, past what any path can name; every source of
/// entries checks each name against the limit before it goes down, so every walk of a tree ends.
public enum PathLimit {
    public static let bytes = 3072
    /// How long one name in a path may be: Linux's filesystems name a file with at most 255 bytes
    /// (NAME_MAX).
    public static let nameBytes = 255

    /// Throws `PathTooLong` when `path` (the parent's path, "" for the root) and `name` would make
    /// a path longer than the limit; `path` is only read when it does.
    public static func check(_ length: Int, adding name: [UInt8], to path: @autoclosure () -> [UInt8]) throws {
        let total = length + 1 + name.count
        guard total > bytes else { return }
        throw PathTooLong(path: path() + [0x2F] + name)
    }

    /// A path for a message: whole up to 72 bytes, else its first 40 and last 24, enough to find it
    /// in a line that fits a screen.
    public static func shortened(_ path: [UInt8]) -> String {
        guard path.count > 72 else { return RawPath.display(path) }
        return RawPath.display(Array(path.prefix(40))) + "…" + RawPath.display(Array(path.suffix(24)))
    }
}

/// A path longer than `PathLimit.bytes`: where it starts and ends, and how deep it goes.
public struct PathTooLong: LayerError {
    /// The whole path, from "/".
    public let path: [UInt8]
    /// What was being read ("read /x/y.squashfs"), when the message should say.
    public var reading: String?

    public init(path: [UInt8], reading: String? = nil) {
        self.path = path
        self.reading = reading
    }

    public var code: ErrorCode { .input }

    public var message: String {
        let depth = path.filter { $0 == 0x2F }.count
        return (reading.map { "\($0): " } ?? "") + "the path \(PathLimit.shortened(path)) "
            + "(\(path.count) bytes, \(depth) names deep) is longer than a path in a layer may be (\(PathLimit.bytes) bytes)"
    }
}
