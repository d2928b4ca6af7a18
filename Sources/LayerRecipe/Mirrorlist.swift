import Foundation

/// A pacman mirrorlist that a repository of a layer file names (`mirrorlist:`), read as pacman's
/// `Include =` reads one: its `Server = URL` lines, in order, each cut at its first `#`.
///
/// A layer file may be a stranger's, and the mirrorlist is read on the host, as root. So it is
/// either pacman's, in /etc/pacman.d, or one of the layer file's folder tree, as a `source:` is;
/// it is read only if it is a regular file of at most 1 MiB, and no line of it is ever quoted.
public struct Mirrorlist: Sendable, Hashable {
    /// The absolute path, as the layer file names it (links not resolved).
    public var path: String
    /// Its servers, as `servers:` holds them (with `$repo` and `$arch`).
    public var servers: [String]

    /// Where pacman keeps its mirrorlists: the one folder of the host a layer file may name.
    public static let hostFolder = "/etc/pacman.d"

    /// What is wrong with a mirrorlist's text: the line (from 1) and what to do.
    public struct Fault: Error, Equatable {
        public var line: Int
        public var message: String
    }

    /// The servers of a mirrorlist's `text`, in order.
    public static func servers(in text: String) throws(Fault) -> [String] {
        var servers: [String] = []
        // "\r\n" is one Character to Swift, and a line end to pacman.
        let lines = text.split(omittingEmptySubsequences: false) { $0 == "\n" || $0 == "\r\n" }
        for (index, raw) in lines.enumerated() {
            let line = (raw.firstIndex(of: "#").map { raw[..<$0] } ?? raw).trimmingCharacters(in: .whitespacesAndNewlines)
            if line.isEmpty { continue }
            guard let equals = line.firstIndex(of: "="), line[..<equals].trimmingCharacters(in: .whitespaces) == "Server"
            else {
                throw Fault(line: index + 1, message: "this is not a `Server = URL` line; a mirrorlist holds those and # comments")
            }
            let url = line[line.index(after: equals)...].trimmingCharacters(in: .whitespaces)
            guard url.contains("://") else {
                throw Fault(line: index + 1, message: "a mirrorlist's server is a URL, such as https://mirror.example/$repo/os/$arch")
            }
            // curl ends a file:// URL's path at `?`, as at `#` (which pacman cut already).
            if url.hasPrefix("file://") && url.contains("?") {
                throw Fault(line: index + 1, message: "a file:// server is a folder, and curl would end its path at `?`; write it %3F")
            }
            servers.append(url)
        }
        return servers
    }
}
