import ArgumentParser
import Foundation
import Glibc
import LayerDiff
import LayerStore
import LayerSupport

extension LayerCtl {
    struct Diff: ParsableCommand, JSONCommand {
        static let configuration = CommandConfiguration(
            commandName: "diff",
            abstract: "Shows what one layer, image or system adds to another.",
            discussion: """
                Each side is a layer (the merged stack up to it: a name, key or unique key prefix), a squashfs \
                image, a folder, or / for the running system (its own filesystem only). Packages come from each \
                side's pacman database: added, removed, upgraded or downgraded in pacman's version order, or \
                moved between explicit and dependency. Files are added, removed or modified, a modified one saying \
                what differs (type, content, size, mode, owner, target, device, xattrs; times do not count), and \
                each is put under the package whose file list holds it, or under `unowned`: what run:, files: and \
                hand edits made. By default: the package changes, files per package, and every unowned file. \
                Exit status as diff(1): 0 the same, 1 different, 2 or more trouble.
                """)

        @Argument(help: "The old side: a layer name, key or key prefix, an image file, a folder, or /.")
        var old: String

        @Argument(help: "The new side, in the same forms.")
        var new: String

        @Flag(help: "Show the package changes only.")
        var packages = false

        @Flag(help: "Show every changed entry, with its package.")
        var files = false

        @Flag(help: "Show counts and sizes per package.")
        var stat = false

        @Flag(help: "Print the changed paths only, one a line.")
        var nameOnly = false

        @Flag(help: "Print one JSON object (the schema is in the README).")
        var json = false

        @OptionGroup var storeOptions: StoreOptions

        func validate() throws {
            if [packages, files, stat, nameOnly, json].filter({ $0 }).count > 1 {
                throw ValidationError("choose one of --packages, --files, --stat, --name-only and --json")
            }
        }

        func run() throws {
            var store: Store?
            let open = { () throws -> Store in
                if let store { return store }
                let opened = try storeOptions.openExisting()
                store = opened
                return opened
            }
            let diff = try TreeDiff.compare(DiffSide.open(old, store: open), DiffSide.open(new, store: open))
            if json {
                try JSONOutput.print(diff)
            } else {
                let text = DiffRenderer(diff: diff, colour: isatty(1) == 1 && getenv("NO_COLOR") == nil)
                let output =
                    nameOnly
                    ? text.names()
                    : packages ? text.packages() : files ? text.everyFile() : stat ? text.statistics() : text.summary()
                if !output.isEmpty { print(output) }
            }
            if !diff.isEmpty { throw ExitCode(1) }
        }
    }
}

/// The text forms of a diff.
struct DiffRenderer {
    let diff: TreeDiff
    let colour: Bool

    private func paint(_ text: String, _ change: TreeDiff.Change) -> String {
        guard colour else { return text }
        let code = change == .added ? "32" : change == .removed ? "31" : "33"
        return "\u{1B}[\(code)m\(text)\u{1B}[0m"
    }

    private static func mark(_ change: TreeDiff.Change) -> String {
        change == .added ? "A" : change == .removed ? "D" : "M"
    }

    private func line(_ entry: TreeDiff.Entry) -> String {
        let detail = entry.differences.isEmpty ? "" : " (\(entry.differences.joined(separator: ", ")))"
        return paint("\(Self.mark(entry.change)) \(RawPath.display(entry.pathBytes))", entry.change) + detail
    }

    func packages() -> String {
        guard !diff.packages.isEmpty else { return "packages: the same" }
        var lines: [String] = []
        let counts = PackageChange.Kind.allCases.compactMap { kind -> String? in
            let n = diff.packages.filter { $0.change == kind }.count
            return n == 0 ? nil : "\(n) \(kind == .reason ? "changed reason" : kind.rawValue)"
        }
        lines.append("packages: " + counts.joined(separator: ", "))
        for package in diff.packages.map(Self.printable) {
            switch package.change {
            case .added: lines.append(paint("  + \(package.name) \(package.after ?? "")", .added))
            case .removed: lines.append(paint("  - \(package.name) \(package.before ?? "")", .removed))
            default:
                lines.append(
                    paint("  ~ \(package.name) \(package.before ?? "") -> \(package.after ?? "")", .modified)
                        + " (\(package.change.rawValue))")
            }
        }
        return lines.joined(separator: "\n")
    }

    /// A package change whose fields (from a layer's database) are fit for a terminal.
    static func printable(_ package: PackageChange) -> PackageChange {
        var shown = package
        shown.name = RawPath.printable(package.name)
        shown.before = package.before.map(RawPath.printable)
        shown.after = package.after.map(RawPath.printable)
        return shown
    }

    /// Per package (and `unowned`): how many entries were added, modified and removed.
    private func groups() -> [(owner: String, entries: [TreeDiff.Entry])] {
        var byOwner: [String: [TreeDiff.Entry]] = [:]
        for entry in diff.entries { byOwner[entry.owner.map(RawPath.printable) ?? "unowned", default: []].append(entry) }
        return byOwner.keys.sorted { ($0 == "unowned" ? 1 : 0, $0) < ($1 == "unowned" ? 1 : 0, $1) }.map {
            ($0, byOwner[$0] ?? [])
        }
    }

    private func counts(_ entries: [TreeDiff.Entry]) -> String {
        [TreeDiff.Change.added, .modified, .removed].compactMap { change in
            let n = entries.filter { $0.change == change }.count
            return n == 0 ? nil : "\(n) \(change.rawValue)"
        }.joined(separator: ", ")
    }

    func summary() -> String {
        var lines = [packages()]
        if diff.entries.isEmpty {
            lines.append("files: the same")
            return lines.joined(separator: "\n")
        }
        lines.append("files: " + counts(diff.entries))
        let groups = groups()
        let width = groups.map(\.owner.count).max() ?? 0
        for group in groups {
            lines.append(
                "  " + group.owner.padding(toLength: width, withPad: " ", startingAt: 0) + "  " + counts(group.entries))
        }
        let unowned = diff.entries.filter { $0.owner == nil }
        if !unowned.isEmpty {
            lines.append("unowned:")
            lines += unowned.map { "  " + line($0) }
        }
        return lines.joined(separator: "\n")
    }

    func everyFile() -> String {
        diff.entries.map { line($0) + "  [\($0.owner.map(RawPath.printable) ?? "unowned")]" }.joined(separator: "\n")
    }

    func statistics() -> String {
        if diff.entries.isEmpty { return "files: the same" }
        var lines: [String] = []
        for group in groups() {
            let bytes = group.entries.filter { $0.change != .removed }.reduce(UInt64(0)) { $0 + $1.size }
            lines.append("\(group.owner)\t\(counts(group.entries))\t\(bytes) bytes")
        }
        lines.append("total\t\(counts(diff.entries))")
        return lines.joined(separator: "\n")
    }

    func names() -> String { diff.entries.map { RawPath.display($0.pathBytes) }.joined(separator: "\n") }
}
