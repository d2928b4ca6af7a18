import Crypto
import LayerEntries
import LayerSupport
import Testing

@testable import SquashfsImage

/// A folder of regular files, in memory: `files` are (name, size, content), names in byte order.
private func flatTree(_ files: [(name: String, size: UInt64, content: UInt8)], links: [String: String] = [:])
    -> MergedTree
{
    func entry(_ name: String, _ kind: MergedTree.Kind, size: UInt64, content: UInt8?) -> MergedTree.Entry {
        MergedTree.Entry(
            name: Array(name.utf8), parent: 0, kind: kind, permissions: 0o644, uid: 0, gid: 0, mtime: 0, size: size,
            rdev: 0, linkTarget: [], xattrs: [], source: [], layer: 0, children: 0..<0, hardLinkTarget: nil,
            linkCount: 1, content: content.map { Hash256(SHA256.hash(data: [$0])) })
    }
    var entries = [entry("", .directory, size: 0, content: nil)]
    entries[0].children = 1..<(files.count + 1)
    var index: [String: Int] = [:]
    for file in files {
        index[file.name] = entries.count
        entries.append(entry(file.name, .regular, size: file.size, content: file.content))
    }
    for (name, target) in links { entries[index[name]!].hardLinkTarget = index[target]! }
    return MergedTree(entries: entries, epoch: 0)
}

@Suite("Data layout")
struct DataLayoutTests {
    let block = 4096

    @Test("full blocks and a tail per file; runs of at most 8 blocks; equal content is stored once, a hard link not at all")
    func files() {
        let tree = flatTree(
            [("a", UInt64(20 * block + 100), 1), ("b", UInt64(block), 2), ("c", 100, 3), ("d", UInt64(20 * block + 100), 1),
             ("e", 100, 3), ("f", 50, 4)],
            links: ["f": "c"])
        let layout = DataLayout(tree, blockSize: block)
        #expect(layout.files.map(\.entry) == [1, 2, 3])
        #expect(layout.fileOfEntry == [-1, 0, 1, 2, 0, 2, -1])
        #expect(layout.files.map(\.blocks) == [20, 1, 0])
        #expect(layout.files.map(\.tail) == [100, 0, 100])
        var runs: [[Int]] = []
        for unit in layout.units {
            if case .blocks(let file, let first, let count) = unit { runs.append([file, first, count]) }
        }
        #expect(runs == [[0, 0, 8], [0, 8, 8], [0, 16, 4], [1, 0, 1]])
        // Both tails share the one fragment block, one after the other.
        #expect(layout.fragments.count == 1)
        #expect(layout.files[0].fragment! == (0, 0))
        #expect(layout.files[2].fragment! == (0, 100))
        #expect(layout.fragments[0].map(\.offset) == [UInt64(20 * block), 0])
    }

    @Test("a tail that does not fit starts a new fragment block")
    func fragmentFull() {
        let tree = flatTree([("a", 3000, 1), ("b", 3000, 2), ("c", 1000, 3)])
        let layout = DataLayout(tree, blockSize: block)
        #expect(layout.fragments.map { $0.map(\.file) } == [[0], [1, 2]])
    }

    @Test("one file more or less changes only the fragment blocks up to the next boundary")
    func boundaries() {
        let block = 128 * 1024
        let all = (0..<4000).map { (name: "f\(1000 + $0)", size: UInt64(1000), content: UInt8($0 % 251)) }
        // Contents repeat every 251 files; give each a distinct size so no two files share data.
        let distinct = all.enumerated().map { (name: $1.name, size: $1.size + UInt64($0), content: $1.content) }
        var fewer = distinct
        fewer.remove(at: 100)
        func blocks(_ files: [(name: String, size: UInt64, content: UInt8)]) -> [[String]] {
            let tree = flatTree(files)
            let layout = DataLayout(tree, blockSize: block)
            return layout.fragments.map { pieces in
                pieces.map { String(decoding: tree.entries[layout.files[$0.file].entry].name, as: UTF8.self) }
            }
        }
        let before = blocks(distinct)
        let after = blocks(fewer)
        #expect(before.count > 30)
        let changed = before.filter { !after.contains($0) }.count
        // The run from the removed file to the next boundary: about minimumFragmentRun of tails.
        #expect(changed >= 1)
        #expect(changed <= DataLayout.minimumFragmentRun / block + 3, "\(changed) of \(before.count) fragment blocks changed")
    }
}
