import Foundation

/// What boot loaders read: Boot Loader Specification entries (systemd-boot, GRUB's blscfg), a
/// /etc/grub.d script for plain GRUB, systemd-boot's loader.conf and GRUB's environment block.
package enum BootEntries {
    /// The entry id: `layerctl-NAME` for the current version, `layerctl-NAME-previous` for the other.
    static func id(_ image: StagedImage, previous: Bool) -> String {
        "layerctl-\(image.name)" + (previous ? "-previous" : "")
    }

    static func title(_ image: StagedImage, previous: Bool) -> String {
        "layerctl: \(image.name)" + (previous ? " (previous, \(image.id))" : " (\(image.id))")
    }

    /// A Boot Loader Specification type #1 entry.
    static func specificationEntry(_ image: StagedImage, previous: Bool) -> String {
        """
        # Written by `layerctl stage \(image.name)`; `layerctl unstage` removes it.
        title      \(title(image, previous: previous))
        version    \(image.id)
        sort-key   layerctl
        linux      \(image.kernelOnBoot)
        initrd     \(image.initrdOnBoot)
        options    \(image.commandLine)

        """
    }

    /// A /etc/grub.d script that prints a menu entry for every staged version; grub-mkconfig runs it.
    static func grubScript(_ sets: [StagedSet]) -> String {
        var entries = ""
        for set in sets {
            for (image, previous) in [(set.current, false)] + (set.previous.map { [($0, true)] } ?? []) {
                entries += """
                    menuentry '\(title(image, previous: previous))' --id '\(id(image, previous: previous))' {
                        search --no-floppy --fs-uuid --set=root \(image.bootUUID)
                        linux \(image.kernelOnBoot) \(image.commandLine)
                        initrd \(image.initrdOnBoot)
                    }

                    """
            }
        }
        return """
            #!/bin/sh
            # Written by layerctl stage and unstage: one menu entry for each image they staged.
            # Edits are lost the next time either runs.
            cat <<'LAYERCTL_ENTRIES'
            \(entries)LAYERCTL_ENTRIES

            """
    }

    /// loader.conf with its `default` line naming `entry` (the other lines kept).
    static func loaderConfiguration(_ text: String, defaultEntry entry: String) -> String {
        var lines = text.split(separator: "\n", omittingEmptySubsequences: false).map(String.init)
        if lines.last == "" { lines.removeLast() }
        let line = "default \(entry).conf"
        if let index = lines.firstIndex(where: { $0.split(separator: " ").first == "default" }) {
            lines[index] = line
        } else {
            lines.insert(line, at: 0)
        }
        return lines.joined(separator: "\n") + "\n"
    }

    /// The size GRUB's environment block always has.
    package static let environmentBlockSize = 1024

    /// GRUB's environment block (grubenv) with `key` set to `value`, padded with # to 1024 bytes,
    /// as grub-editenv writes it.
    package static func grubEnvironment(_ existing: [UInt8]?, setting key: String, to value: String) throws -> [UInt8] {
        var pairs: [(String, String)] = []
        if let existing {
            for line in String(decoding: existing, as: UTF8.self).split(separator: "\n") where !line.hasPrefix("#") {
                guard let equals = line.firstIndex(of: "=") else { continue }
                pairs.append((String(line[..<equals]), String(line[line.index(after: equals)...])))
            }
        }
        pairs.removeAll { $0.0 == key }
        pairs.append((key, value))
        var text = "# GRUB Environment Block\n"
        for (name, value) in pairs { text += "\(name)=\(value)\n" }
        var bytes = Array(text.utf8)
        guard bytes.count <= environmentBlockSize else {
            throw BootError("GRUB's environment block would exceed \(environmentBlockSize) bytes")
        }
        bytes += [UInt8](repeating: UInt8(ascii: "#"), count: environmentBlockSize - bytes.count)
        return bytes
    }
}
