import Foundation
import Testing

/// `build --check` builds a chain twice under different conditions and names what differs.
@Suite("Reproducibility check", .enabled(if: Harness.canBuild, Harness.cannotBuildReason))
struct CheckTests {
    @Test("the demo stack builds twice into the same trees and image; the user's store is not touched")
    func demo() throws {
        let layers = try Harness.demoLayers()
        let store = try Harness.temporaryDirectory("check-store")
        let check = try Harness.run(["build", "--check", layers + "/gaming.yaml", "--store", store])
        #expect(check.status == 0, "\(check.stdout) \(check.stderr)")
        #expect(check.stdout.contains("\nreproducible\n") && check.stdout.contains("image: the same, sha256 "), "\(check.stdout)")
        #expect(
            check.stdout.contains("umask 0077, TZ=Pacific/Kiritimati, LANG=POSIX, ulimit -n 4096 -s 65536, 2 compressor jobs"),
            "\(check.stdout)")
        #expect(try Harness.run(["ls", "--store", store]).stdout.split(separator: "\n").count <= 1)
        #expect(try FileManager.default.contentsOfDirectory(atPath: store + "/tmp").isEmpty)
        let json = try Harness.run(["build", "--check", layers + "/gaming.yaml", "--store", store, "--json"])
        let report = json.stdout.split(separator: "\n").last.map { String($0) } ?? ""
        #expect(json.status == 0 && report.hasPrefix("{\"conditions\":"), "\(report)")
        // Both stores are gone: the second one's folder in /dev/shm (other checks may run meanwhile,
        // with folders of their own) and the first one's under the store's tmp.
        let object = try JSONSerialization.jsonObject(with: Data(report.utf8)) as? [String: Any]
        let stores = object?["stores"] as? [String] ?? []
        #expect(stores.count == 2)
        for path in stores {
            let top = path.hasPrefix("/dev/shm/") ? "/dev/shm/" + path.dropFirst("/dev/shm/".count).prefix { $0 != "/" } : path
            #expect(!FileManager.default.fileExists(atPath: top), "\(top)")
        }

        // A check takes the databases and packages the user's store has: once the store has
        // built the stack, a check works --offline, as a build does. (The demo's packages are
        // fetched again all the same: under `Optional`, libalpm fetches a cached package again
        // while its .sig is not cached, and the demo's packages have none.)
        let noCopy = try Harness.run(["build", "--check", "--offline", layers + "/gaming.yaml", "--store", store])
        #expect(noCopy.status == 3 && noCopy.stderr.contains("there is no copy of repository demo yet"), "\(noCopy.stderr)")
        #expect(noCopy.stderr.contains("/base.yaml:"), "the repository's place: \(noCopy.stderr)")
        #expect(try Harness.run(["build", layers + "/gaming.yaml", "--store", store]).status == 0)
        let offline = try Harness.run(["build", "--check", "--offline", layers + "/gaming.yaml", "--store", store])
        #expect(offline.status == 0 && offline.stdout.hasSuffix("\nreproducible\n"), "\(offline.stdout) \(offline.stderr)")

        // Locks hold in a check as in a build, and a check writes none, not even a stale one's
        // rewrite.
        #expect(try Harness.run(["lock", layers + "/gaming.yaml", "--store", store]).status == 0)
        try Harness.edit(layers + "/gaming.yaml") { $0.replacingOccurrences(of: "packages: [game]", with: "packages: [game, demo-app]") }
        let lock = try String(contentsOfFile: layers + "/gaming.lock", encoding: .utf8)
        let stale = try Harness.run(["build", "--check", layers + "/gaming.yaml", "--store", store])
        #expect(stale.status == 0, "\(stale.stdout) \(stale.stderr)")
        #expect(try String(contentsOfFile: layers + "/gaming.lock", encoding: .utf8) == lock)
    }

    @Test("a run: step that writes the time is caught: the file, what differs and the step are named; the others are not")
    func caught() throws {
        let layers = try Harness.demoLayers()
        try """
            from: base
            run:
              - date > /etc/built
              - echo fixed > /etc/fixed
              - head -c 8 /dev/urandom > /usr/share/noise
              - ulimit -n -s > /etc/limits
            """.write(toFile: layers + "/stamped.yaml", atomically: false, encoding: .utf8)
        let store = try Harness.temporaryDirectory("check-store")
        let check = try Harness.run(["build", "--check", layers + "/stamped.yaml", "--store", store])
        #expect(check.status == 1, "\(check.stdout) \(check.stderr)")
        let file = layers + "/stamped.yaml"
        #expect(check.stdout.contains("stamped /etc/built: content; written by run 1 `date > /etc/built` at \(file):3:5"), "\(check.stdout)")
        #expect(check.stdout.contains("stamped /usr/share/noise: content; written by run 3 `head -c 8 /dev/urandom > /usr/share/noise` at \(file):5:5"), "\(check.stdout)")
        // The two builds' callers had different limits; the steps had the same.
        #expect(
            !check.stdout.contains("/etc/fixed") && !check.stdout.contains("/etc/limits") && !check.stdout.contains("base "),
            "\(check.stdout)")
        #expect(check.stdout.contains("image: differs") && check.stdout.hasSuffix("not reproducible\n"), "\(check.stdout)")
    }
}
