import Foundation
import Glibc
import LayerSupport

/// The keys of a GnuPG keyring, as `gpg --list-keys` shows them.
enum Keyring {
    /// `FINGERPRINT:VALIDITY` of every key with marginal (m), full (f) or ultimate (u) validity,
    /// sorted. A keyring without a public key ring (or no keyring at all) trusts nothing, and is
    /// not touched: gpg would create its files. Validity is what the signature check itself sees:
    /// gpg brings the trust database up to date first, as it does when libalpm verifies (a keyring
    /// whose trust database was never checked shows every key's validity as unknown).
    static func trustedKeys(home: String) throws -> [String] {
        guard FileSystem.exists(home + "/pubring.gpg") || FileSystem.exists(home + "/pubring.kbx") else { return [] }
        let candidates: [String] = ["/usr/bin/gpg", "/bin/gpg"]
        let gpg = candidates.first { access($0, X_OK) == 0 }
        guard let gpg else { throw BuildFailure("listing the keys of \(home) failed: gpg is not installed", code: .system) }
        let listed = try capture(
            gpg,
            ["--homedir", home, "--batch", "--quiet", "--no-permission-warning", "--with-colons", "--list-keys"],
            environment: ["PATH=/usr/bin:/bin", "LC_ALL=C"])
        guard listed.status == 0 else {
            throw BuildFailure("listing the keys of \(home) failed: gpg exited with status \(listed.status)", code: .system)
        }
        let output = String(decoding: listed.output, as: UTF8.self)
        var keys: [String] = []
        var validity: Substring?
        for line in output.split(separator: "\n") {
            let fields = line.split(separator: ":", omittingEmptySubsequences: false)
            if fields.first == "pub", fields.count > 1 {
                validity = ["m", "f", "u"].contains(fields[1]) ? fields[1] : nil
            } else if fields.first == "fpr", fields.count > 9, let current = validity {
                keys.append("\(fields[9]):\(current)")
                validity = nil
            } else if fields.first == "sub" {
                validity = nil
            }
        }
        return keys.sorted()
    }

    /// The gpg daemons (agent, dirmngr, keyboxd) running on keyring `home`. libalpm's gpgme starts
    /// them on a signature check, dirmngr to look an unknown key up, and leaves them running.
    static func daemons(home: String) -> Set<pid_t> {
        func withoutTrailingSlashes<Path: BidirectionalCollection<UInt8>>(_ path: Path) -> [UInt8] {
            Array(path.reversed().drop { $0 == 0x2F }.reversed())
        }
        let wanted = withoutTrailingSlashes(home.utf8)
        var found: Set<pid_t> = []
        for entry in (try? FileSystem.listDirectory("/proc")) ?? [] {
            guard let pid = pid_t(entry),
                let data = FileManager.default.contents(atPath: "/proc/\(pid)/cmdline")
            else { continue }
            let arguments = data.split(separator: 0, omittingEmptySubsequences: false).map { Array($0) }
            guard let command = arguments.first?.split(separator: 0x2F).last,
                ["gpg-agent", "dirmngr", "keyboxd"].contains(String(decoding: command, as: UTF8.self)),
                let flag = arguments.firstIndex(of: Array("--homedir".utf8)), flag + 1 < arguments.count,
                withoutTrailingSlashes(arguments[flag + 1]) == wanted
            else { continue }
            found.insert(pid)
        }
        return found
    }

    /// Runs `body`, then stops the gpg daemons on keyring `home` that started meanwhile: a build
    /// leaves no process behind. Those running before are someone else's and stay.
    static func withoutLeftoverDaemons<T>(home: String, _ body: () throws -> T) rethrows -> T {
        let before = daemons(home: home)
        defer {
            let started = daemons(home: home).subtracting(before)
            for pid in started { kill(pid, SIGTERM) }
            // They are not our children: wait (up to a second) until each has ended.
            for _ in 0..<100 where started.contains(where: isRunning) { usleep(10_000) }
        }
        return try body()
    }

    /// Whether `pid` is still a live process (neither gone nor a zombie awaiting its parent).
    private static func isRunning(_ pid: pid_t) -> Bool {
        guard let stat = FileManager.default.contents(atPath: "/proc/\(pid)/stat"),
            let close = stat.lastIndex(of: UInt8(ascii: ")")), close + 2 < stat.endIndex
        else { return false }
        return stat[close + 2] != UInt8(ascii: "Z")
    }

}
