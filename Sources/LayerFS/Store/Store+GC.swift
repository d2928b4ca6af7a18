import Foundation
import Glibc

extension Store {
    /// What `gc` removed.
    public struct Collected: Sendable, Codable {
        public var layers: [String]
        public var bytes: Int64
        public var temporary: [String]
    }

    /// Removes every layer no ref reaches (through its parents), waiting until no build runs.
    /// Each layer leaves the store by one rename(2) into `tmp/` before it is deleted, so a
    /// reader never meets half a layer.
    public func collectGarbage() throws -> Collected {
        let lock = try self.lock(.exclusive)
        defer { lock.unlock() }
        var reachable = Set<String>()
        for (_, key) in try refs() where contains(key) {
            reachable.formUnion(try chain(key))
        }
        var collected = Collected(layers: [], bytes: 0, temporary: [])
        collected.temporary = try FileSystem.listDirectory(tmpDirectory)
        for name in collected.temporary { try FileSystem.removeTree(tmpDirectory + "/" + name) }
        for key in try FileSystem.listDirectory(layersDirectory) where !reachable.contains(key) {
            let doomed = tmpDirectory + "/gc-" + key
            try sys("move out", layerDirectory(key)) { rename(layerDirectory(key), doomed) }
            collected.bytes += FileSystem.treeSize(doomed)
            try FileSystem.removeTree(doomed)
            collected.layers.append(key)
        }
        for name in try FileSystem.listDirectory(locksDirectory) where !reachable.contains(name) {
            unlink(locksDirectory + "/" + name)
        }
        return collected
    }
}
