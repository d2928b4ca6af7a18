import Glibc
import LayerSupport

/// The merged view of a layer stack: every visible entry with the metadata the image records.
///
/// Entries are stored flat. The root is entry 0; a directory's children are contiguous and in
/// byte order of their names, so a walk over `children` visits the image in the order the writer
/// emits it. Names and paths are raw bytes, because file names on Linux need not be UTF-8.
public struct MergedTree: Sendable {
    public enum Kind: UInt8, Sendable {
        case directory, regular, symlink, characterDevice, blockDevice, fifo, socket
    }

    public typealias ExtendedAttribute = LayerSupport.ExtendedAttribute

    public struct Entry: Sendable {
        public var name: [UInt8]
        public var parent: Int
        public var kind: Kind
        /// Permission bits, setuid/setgid/sticky included; the type is in `kind`.
        public var permissions: UInt16
        public var uid: UInt32
        public var gid: UInt32
        public var mtime: Int64
        /// Bytes of file data for regular files, 0 otherwise.
        public var size: UInt64
        public var rdev: UInt64
        public var linkTarget: [UInt8]
        public var xattrs: [ExtendedAttribute]
        /// The path the entry's content is read from, in the layer tree that provides it. A merge
        /// from manifests sets it for regular files and directories only; other entries carry
        /// everything in their fields.
        public var source: [UInt8]
        /// The stack position (0 = bottom) of the tree that provides the entry.
        public var layer: Int
        /// Children of a directory, as indices into `entries`.
        public var children: Range<Int>
        /// For a name that is a further hard link to an earlier entry: that entry's index.
        public var hardLinkTarget: Int?
        /// How many visible names share this entry's inode (1 unless hard-linked).
        public var linkCount: Int
        /// For regular files, the sha256 of their data when the layer's manifest recorded it.
        public var content: Hash256? = nil

        public init(
            name: [UInt8], parent: Int, kind: Kind, permissions: UInt16, uid: UInt32, gid: UInt32, mtime: Int64,
            size: UInt64, rdev: UInt64, linkTarget: [UInt8], xattrs: [ExtendedAttribute], source: [UInt8],
            layer: Int, children: Range<Int>, hardLinkTarget: Int?, linkCount: Int, content: Hash256? = nil
        ) {
            self.name = name
            self.parent = parent
            self.kind = kind
            self.permissions = permissions
            self.uid = uid
            self.gid = gid
            self.mtime = mtime
            self.size = size
            self.rdev = rdev
            self.linkTarget = linkTarget
            self.xattrs = xattrs
            self.source = source
            self.layer = layer
            self.children = children
            self.hardLinkTarget = hardLinkTarget
            self.linkCount = linkCount
            self.content = content
        }
    }

    public package(set) var entries: [Entry]
    /// Timestamps newer than this were clamped to it.
    public let epoch: Int64

    package init(entries: [Entry], epoch: Int64) {
        self.entries = entries
        self.epoch = epoch
    }

    /// The sum of the sizes of all distinct regular files: what an export reads.
    public var dataBytes: UInt64 {
        // By index and field: a closure over whole entries would copy each one.
        var total: UInt64 = 0
        for index in entries.indices where entries[index].kind == .regular && entries[index].hardLinkTarget == nil {
            total += entries[index].size
        }
        return total
    }

    /// The path of entry `index` inside the image, "/" for the root.
    public func path(of index: Int) -> [UInt8] {
        var components: [[UInt8]] = []
        var current = index
        while current != 0 {
            components.append(entries[current].name)
            current = entries[current].parent
        }
        if components.isEmpty { return Array("/".utf8) }
        var path: [UInt8] = []
        for component in components.reversed() {
            path.append(UInt8(ascii: "/"))
            path.append(contentsOf: component)
        }
        return path
    }

    /// The entry at `path` ("/etc/x"), if there is one: a walk from the root, each folder's names
    /// being in byte order. Symlinks on the way are not followed.
    public func entry(at path: String) -> Int? {
        var current = 0
        for component in Array(path.utf8).split(separator: 0x2F) {
            let children = entries[current].children
            var low = children.lowerBound
            var high = children.upperBound
            while low < high {
                let middle = (low + high) / 2
                if entries[middle].name.lexicographicallyPrecedes(component) {
                    low = middle + 1
                } else {
                    high = middle
                }
            }
            guard low < children.upperBound, entries[low].name.elementsEqual(component) else { return nil }
            current = low
        }
        return current
    }

    /// The names in the folder at `path`, or nil when there is no folder there.
    public func names(in path: String) -> [String]? {
        guard let index = entry(at: path), entries[index].kind == .directory else { return nil }
        return entries[index].children.map { RawPath.string(entries[$0].name) }
    }

    /// Entry indices in depth-first order, each directory before its children.
    public func depthFirst() -> [Int] {
        var order: [Int] = []
        order.reserveCapacity(entries.count)
        var stack = [0]
        while let index = stack.popLast() {
            order.append(index)
            let children = entries[index].children
            stack.append(contentsOf: children.reversed())
        }
        return order
    }

    /// Entry indices in depth-first order, each with the entry it is a hard link to, if any: the
    /// name of its group met first in this order. A group's first name in `entries` may come
    /// later depth-first (`/x/z` is entered before `/x/a/f`), so writers that walk depth-first,
    /// and must write the data before any link to it, ask here.
    public func depthFirstWithLinks() -> [(index: Int, linkTo: Int?)] {
        var firstMet: [Int: Int] = [:]
        return depthFirst().map { index in
            let entry = entries[index]
            guard entry.kind != .directory, entry.hardLinkTarget != nil || entry.linkCount > 1 else {
                return (index, nil)
            }
            let group = entry.hardLinkTarget ?? index
            if let first = firstMet[group] { return (index, first) }
            firstMet[group] = index
            return (index, nil)
        }
    }
}

extension MergedTree.Entry {
    /// The entry for the file at `path`, whose lstat is `st`: its metadata, symlink target and
    /// extended attributes (without overlayfs's own; `xattrs` and `linkTarget` when the caller has
    /// read them), with the mtime clamped to `epoch`. Name, parent and layer are left for the
    /// caller.
    package static func read(
        _ path: [UInt8], _ st: stat, epoch: Int64, xattrs: [ExtendedAttribute]? = nil, linkTarget: [UInt8]? = nil
    ) throws -> MergedTree.Entry {
        guard let kind = MergedTree.Kind(mode: st.st_mode) else {
            throw MergeError.unsupportedType(RawPath.string(path))
        }
        return MergedTree.Entry(
            name: [], parent: 0, kind: kind,
            permissions: UInt16(st.st_mode & 0o7777), uid: st.st_uid, gid: st.st_gid,
            mtime: min(Int64(st.st_mtim.tv_sec), epoch),
            size: kind == .regular ? UInt64(st.st_size) : 0,
            rdev: kind == .characterDevice || kind == .blockDevice ? UInt64(st.st_rdev) : 0,
            linkTarget: kind == .symlink ? try linkTarget ?? FileSystem.readLink(path) : [],
            xattrs: try xattrs ?? ExtendedAttributes.all(path), source: path, layer: 0, children: 0..<0,
            hardLinkTarget: nil, linkCount: 1)
    }
}

extension MergedTree.Kind {
    public init?(mode: mode_t) {
        switch mode & S_IFMT {
        case S_IFDIR: self = .directory
        case S_IFREG: self = .regular
        case S_IFLNK: self = .symlink
        case S_IFCHR: self = .characterDevice
        case S_IFBLK: self = .blockDevice
        case S_IFIFO: self = .fifo
        case S_IFSOCK: self = .socket
        default: return nil
        }
    }

    /// The kind in words, for messages: "a symbolic link".
    public var described: String {
        switch self {
        case .directory: "a folder"
        case .regular: "a file"
        case .symlink: "a symbolic link"
        case .characterDevice: "a character device"
        case .blockDevice: "a block device"
        case .fifo: "a FIFO"
        case .socket: "a socket"
        }
    }

    /// The `S_IFMT` bits of this kind.
    public var typeBits: UInt32 {
        switch self {
        case .directory: UInt32(S_IFDIR)
        case .regular: UInt32(S_IFREG)
        case .symlink: UInt32(S_IFLNK)
        case .characterDevice: UInt32(S_IFCHR)
        case .blockDevice: UInt32(S_IFBLK)
        case .fifo: UInt32(S_IFIFO)
        case .socket: UInt32(S_IFSOCK)
        }
    }
}
