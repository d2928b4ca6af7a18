import Glibc
import LayerSupport

extension BuilderChild {
    /// Sets each folder of this layer (those in its overlay's upper directory, which the build
    /// shows read-only at `upperDirectory`) to the time it will have in the layer, through the
    /// root, as `Normaliser.settle` sets it once the build is over. Called before the
    /// post-transaction hooks run, so that what they record of a folder's time stays true in the
    /// layer. fontconfig's hook (`fc-cache -s`) writes, for each font folder, a cache that holds
    /// the folder's mtime (bounded by `SOURCE_DATE_EPOCH`) and is valid while the folder keeps it;
    /// the same run deletes a cache whose folder has another time. The folders a transaction
    /// writes to have the time of the build, so without this a layer with fonts would hold no font
    /// cache, and every boot would scan every font again.
    ///
    /// Best effort: a folder that cannot be read or set is left to the normaliser. A folder the
    /// build mounted over (`/proc`, `/run`) is on another device in the root, and left alone.
    static func settleFolderTimes(epoch: Int64) {
        var root = stat()
        guard lstat("/", &root) == 0 else { return }
        var folders: [[UInt8]] = [[]]
        while let relative = folders.popLast() {
            let inRoot = [0x2F] + relative
            var st = stat()
            guard RawPath.with(inRoot, { lstat($0, &st) }) == 0, st.st_mode & S_IFMT == S_IFDIR, st.st_dev == root.st_dev
            else { continue }
            if var times = Normaliser.settledTimes(st, epoch: epoch) {
                _ = RawPath.with(inRoot) { utimensat(AT_FDCWD, $0, &times, AT_SYMLINK_NOFOLLOW) }
            }
            let inUpper = RawPath.join(Array(upperDirectory.utf8), relative)
            guard let folder = try? OpenFolder(at: AT_FDCWD, inUpper, path: inUpper) else { continue }
            for (index, name) in folder.names.enumerated().reversed() {
                let type = index < folder.types.count ? folder.types[index] : UInt8(DT_UNKNOWN)
                // What readdir does not type is looked at in the root, above.
                guard type == DT_DIR || type == DT_UNKNOWN else { continue }
                folders.append(relative.isEmpty ? name : relative + [0x2F] + name)
            }
        }
    }
}
