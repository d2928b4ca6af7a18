/// pacman's working state in a tree, which the builder takes out of every layer before it stores
/// it: a file that `files:` wrote there would be gone without a word, so the parser refuses one.
public enum PackageManagerState {
    /// The lock and the log: the normaliser removes them.
    public static let files = ["/var/lib/pacman/db.lck", "/var/log/pacman.log"]
    /// The package cache: the normaliser empties it.
    public static let packageCache = "/var/cache/pacman/pkg"
    /// The sync databases: the build puts its own there for libalpm and the steps, and no layer
    /// holds them.
    public static let syncDatabases = "/var/lib/pacman/sync"

    /// The file or folder of `path`, absolute, if it is pacman's working state.
    public static func holding(_ path: String) -> String? {
        files.first { $0 == path } ?? [packageCache, syncDatabases].first { path == $0 || path.hasPrefix($0 + "/") }
    }
}
