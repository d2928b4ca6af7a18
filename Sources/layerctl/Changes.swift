import ArgumentParser
import Foundation
import LayerBoot
import LayerDiff
import LayerSupport

extension LayerCtl {
    struct Changes: ParsableCommand, JSONCommand {
        static let configuration = CommandConfiguration(
            commandName: "changes",
            abstract: "Shows what changed since boot: what the next boot forgets.",
            discussion: """
                It reads the tmpfs that takes this boot's writes (/run/layerctl/rw/upper) against the image \
                below it (/run/layerctl/image): files added, modified (saying what differs) and deleted, and the \
                packages installed, removed, upgraded or downgraded since boot, from pacman's local database. \
                Times alone do not count as a change. --upper and --lower compare any overlayfs upper directory \
                with what it lies on.
                """)

        @Option(help: "The overlay's upper directory (default: this boot's, /run/layerctl/rw/upper).")
        var upper: String = "/run/layerctl/rw/upper"

        @Option(help: "What the upper directory lies on (default: this boot's image, /run/layerctl/image).")
        var lower: String = "/run/layerctl/image"

        @Flag(help: "Print one JSON object: files, packages and upperBytes.")
        var json = false

        @Option(
            help: ArgumentHelp(
                "Print a draft layer file, from PARENT, that would make these changes again.", valueName: "PARENT"))
        var layerFile: String?

        func run() throws {
            var isDirectory: ObjCBool = false
            guard FileManager.default.fileExists(atPath: upper, isDirectory: &isDirectory), isDirectory.boolValue else {
                throw BootError(
                    upper == "/run/layerctl/rw/upper"
                        ? "this system did not boot from a layerctl image (there is no /run/layerctl/rw/upper)"
                        : "\(upper) is not a directory")
            }
            let changes = try BootChanges.compute(upper: upper, lower: lower)
            if let layerFile {
                print(LayerDraft.draft(changes, parent: layerFile, upper: upper, lower: lower), terminator: "")
                return
            }
            if json {
                try JSONOutput.print(changes)
                return
            }
            print(Self.render(changes))
        }

        static func render(_ changes: BootChanges) -> String {
            var lines: [String] = []
            func count(_ change: PackageChange.Kind) -> Int {
                changes.packages.filter { $0.change == change }.count
            }
            if changes.packages.isEmpty {
                lines.append("packages: no change")
            } else {
                let kinds = PackageChange.Kind.allCases
                lines.append(
                    "packages: "
                        + kinds.filter { count($0) > 0 }.map {
                            "\(count($0)) \(Self.words[$0] ?? $0.rawValue)"
                        }
                        .joined(separator: ", "))
                for package in changes.packages.map(DiffRenderer.printable) {
                    switch package.change {
                    case .added: lines.append("  + \(package.name) \(package.after ?? "")")
                    case .removed: lines.append("  - \(package.name) \(package.before ?? "")")
                    default:
                        lines.append(
                            "  ~ \(package.name) \(package.before ?? "") -> \(package.after ?? "") (\(package.change.rawValue))"
                        )
                    }
                }
            }
            func files(_ change: BootChanges.Change) -> [BootChanges.File] {
                changes.files.filter { $0.change == change }
            }
            func bytes(_ list: [BootChanges.File]) -> String { size(list.reduce(0) { $0 + $1.size }) }
            lines.append(
                "files: \(files(.added).count) added (\(bytes(files(.added)))), \(files(.modified).count) modified, "
                    + "\(files(.deleted).count) deleted")
            for file in changes.files {
                let mark = file.change == .added ? "A" : file.change == .modified ? "M" : "D"
                let detail = file.differences.isEmpty ? "" : " (\(file.differences.joined(separator: ", ")))"
                lines.append("  \(mark) \(RawPath.display(file.pathBytes))\(detail)")
            }
            lines.append("this boot holds \(size(changes.upperBytes)) of file data in memory; the next boot forgets it")
            return lines.joined(separator: "\n")
        }

        /// Since boot, packages are installed rather than added.
        static let words: [PackageChange.Kind: String] = [.added: "installed", .reason: "changed reason"]

        static func size(_ bytes: UInt64) -> String {
            bytes < 1024
                ? "\(bytes) B"
                : bytes < 1_048_576
                    ? String(format: "%.1f KiB", Double(bytes) / 1024)
                    : String(format: "%.1f MiB", Double(bytes) / 1_048_576)
        }
    }
}
