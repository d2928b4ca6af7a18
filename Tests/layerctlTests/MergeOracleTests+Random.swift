import Foundation
import Glibc
import Testing

/// Random stacks through the whole merge oracle (`expectSameAsOverlay`: the image, the dir and tar
/// exports, `diff`, package resolution's lookups and `changes` against the kernel's overlayfs,
/// and the image against unsquashfs, sqfs2tar and mksquashfs). The names come from a small pool,
/// so layers meet: a folder over a file and a file over a folder, whiteouts and opaque folders
/// over what is below and over nothing, hard links whose names sort either way, a folder's
/// metadata changed by a layer that only adds to it.
extension MergeOracleTests {
    static let randomStacks = ProcessInfo.processInfo.environment["LAYERCTL_MERGE_STACKS"].flatMap { Int($0) } ?? 12
    static let randomSeed = ProcessInfo.processInfo.environment["LAYERCTL_MERGE_SEED"].flatMap { UInt64($0) } ?? 5

    @Test(
        "random stacks of two to four layers whose names meet: the image and every other merge are the kernel's overlay"
    )
    func randomStacks() throws {
        var random = MutationTests.Random(state: Self.randomSeed)
        var kinds: [String: Int] = [:]
        for number in 0..<Self.randomStacks {
            let stack = try CraftedStack("random-\(number)")
            let count = 2 + random.below(3)
            var visible: [String: Bool] = [:]
            for index in 0..<count {
                try stack.layer("layer\(index)", recordOpaque: true) { tree in
                    for kind in try Self.fillRandomly(tree, over: &visible, &random) { kinds[kind, default: 0] += 1 }
                }
            }
            try expectSameAsOverlay(stack, top: "layer\(count - 1)")
        }
        print(
            "random stacks: \(Self.randomStacks) (seed \(Self.randomSeed)), entries \(kinds.sorted { $0.key < $1.key })"
        )
        for kind in ["file", "folder", "symlink", "hard link", "fifo", "device", "whiteout", "opaque", "sparse"] {
            #expect(kinds[kind, default: 0] >= Self.randomStacks / 4, "\(kind): \(kinds[kind, default: 0])")
        }
    }

    /// Fills one layer with 3 to 30 entries named from a small pool over the layers below, whose
    /// merge `visible` holds (path → is a folder) and is updated to this layer's, and returns
    /// their kinds. A whiteout is made as overlayfs makes one: of a name below, in a folder that is
    /// no opaque one (the kernel lists a whiteout in a folder no layer below has, and then cannot
    /// find it: no build makes one there).
    static func fillRandomly(
        _ tree: CraftedStack.Tree, over visible: inout [String: Bool], _ random: inout MutationTests.Random
    ) throws -> [String] {
        let pool = ["a", "b", "c", "z z", "é"]
        var made: [String: Bool] = [:]  // path → is a folder
        var whiteouts: [String] = []
        var files: [String] = []
        var opaque: Set<String> = []
        var kinds: [String] = []
        defer { visible = Self.merged(visible, made: made, whiteouts: whiteouts, opaque: opaque) }
        func metadata() -> (mode: mode_t, owner: (uid_t, gid_t), mtime: Int64) {
            (
                random.pick([0o755, 0o700, 0o1777, 0o2755, 0o555]), random.pick([(0, 0), (1000, 100), (5, 6)]),
                Int64(1_500_000_000 + random.below(100_000_000))
            )
        }
        for _ in 0..<(3 + random.below(28)) {
            // A quarter of the time, a whiteout of a name below (in the merge's order of names:
            // a dictionary's changes from run to run).
            let below = visible.keys.sorted()
            let hiding = !below.isEmpty && random.below(4) == 0
            var parts = (0..<(1 + random.below(3))).map { _ in random.pick(pool) }
            if hiding { parts = random.pick(below).split(separator: "/").map(String.init) }
            let depth = parts.count
            // The folders above, made in this layer where they are not yet.
            var fits = true
            for end in 1..<depth {
                let folder = parts[0..<end].joined(separator: "/")
                switch made[folder] {
                case true: continue
                case false: fits = false
                default:
                    let (mode, owner, mtime) = metadata()
                    try tree.directory(folder, mode: mode, owner: owner, mtime: mtime)
                    made[folder] = true
                    kinds.append("folder")
                }
                if !fits { break }
            }
            let path = parts.joined(separator: "/")
            guard fits, made[path] == nil else { continue }
            switch hiding ? 16 : random.below(20) {
            case 0..<4:
                let (mode, owner, mtime) = metadata()
                try tree.directory(path, mode: mode, owner: owner, mtime: mtime)
                made[path] = true
                kinds.append("folder")
                if random.below(4) == 0 { try tree.xattr(path, "user.note", Array("d\(random.below(9))".utf8)) }
            case 4..<9:
                let size = random.pick([0, 1, 100, 5000, 70_000])
                let content = String((0..<size).map { _ in random.pick(Array("abc\n")) })
                try tree.file(
                    path, content, mode: random.pick([0o644, 0o600, 0o4755, 0o2750, 0o000]),
                    owner: random.pick([(0, 0), (1000, 100)]), mtime: Int64(1_400_000_000 + random.below(100_000_000)))
                if random.below(4) == 0 { try tree.xattr(path, "user.note", Array("f\(random.below(9))".utf8)) }
                made[path] = false
                files.append(path)
                kinds.append("file")
            case 9:
                try tree.sparse(path, size: 1 << 20 + random.below(1 << 20), data: "data", at: random.below(1 << 20))
                made[path] = false
                files.append(path)
                kinds.append("sparse")
            case 10, 11:
                try tree.symlink(path, to: random.pick(["a", "../b", "/etc/passwd", "missing/x", "."]))
                made[path] = false
                kinds.append("symlink")
            case 12, 13:
                guard let existing = files.isEmpty ? nil : random.pick(files) else { continue }
                try tree.hardLink(path, to: existing)
                made[path] = false
                kinds.append("hard link")
            case 14:
                try tree.fifo(path)
                made[path] = false
                kinds.append("fifo")
            case 15:
                try tree.device(
                    path, character: random.below(2) == 0, major: UInt32(1 + random.below(200)),
                    minor: UInt32(random.below(300)))
                made[path] = false
                kinds.append("device")
            case 16, 17:
                let folders = (1..<depth).map { parts[0..<$0].joined(separator: "/") }
                guard visible[path] != nil, !folders.contains(where: opaque.contains) else { continue }
                try tree.whiteout(path)
                made[path] = false
                whiteouts.append(path)
                kinds.append("whiteout")
            default:
                // A folder of this layer made opaque: what is below it under that name is hidden.
                let folder = parts.dropLast().joined(separator: "/")
                guard !folder.isEmpty, !opaque.contains(folder),
                    !whiteouts.contains(where: { $0.hasPrefix(folder + "/") })
                else { continue }
                try tree.opaque(folder)
                opaque.insert(folder)
                kinds.append("opaque")
            }
        }
        return kinds
    }

    /// The merge of a layer (`made`, its `whiteouts` and `opaque` folders) over `below`, by
    /// overlayfs's rules, parents first.
    static func merged(_ below: [String: Bool], made: [String: Bool], whiteouts: [String], opaque: Set<String>)
        -> [String: Bool]
    {
        var result = below
        func removeBelow(_ path: String) { result = result.filter { !$0.key.hasPrefix(path + "/") } }
        let hidden = Set(whiteouts)
        for (path, folder) in made.sorted(by: {
            $0.key.split(separator: "/").count < $1.key.split(separator: "/").count
        }) {
            if hidden.contains(path) {
                result[path] = nil
                removeBelow(path)
            } else if !folder || result[path] != true || opaque.contains(path) {
                removeBelow(path)
                result[path] = folder
            }
        }
        return result
    }
}
