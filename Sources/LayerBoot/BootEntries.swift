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

    /// A Boot Loader Specification type #1 entry. Its version is the time of its staging: within
    /// the sort key, systemd-boot orders entries by version, the highest first (an image id would
    /// put the previous version before the current one about half the time).
    /// A unified kernel image is started as the EFI program it is (`efi`, which every systemd-boot
    /// reads), with no `options`: its own command line is the one it boots with.
    static func specificationEntry(_ image: StagedImage, previous: Bool) -> String {
        let boots =
            image.unifiedKernel == true
            ? "efi        \(image.kernelOnBoot)\n"
            : "linux      \(image.kernelOnBoot)\ninitrd     \(image.initrdOnBoot)\noptions    \(image.commandLine)\n"
        return """
            # Written by `layerctl stage \(image.name)`; `layerctl unstage` removes it.
            title      \(title(image, previous: previous))
            version    \(image.stagedAt)
            sort-key   layerctl
            \(boots)
            """
    }

    /// A /etc/grub.d script that prints a menu entry for every staged version; grub-mkconfig runs it.
    static func grubScript(_ sets: [StagedSet]) -> String {
        var entries = ""
        for set in sets {
            for (image, previous) in [(set.current, false)] + (set.previous.map { [($0, true)] } ?? []) {
                // GRUB hands a unified kernel image to the firmware (and shim) to check and start.
                let boots =
                    image.unifiedKernel == true
                    ? "    chainloader \(image.kernelOnBoot)\n"
                    : "    linux \(image.kernelOnBoot) \(image.commandLine)\n    initrd \(image.initrdOnBoot)\n"
                entries += """
                    menuentry '\(title(image, previous: previous))' --id '\(id(image, previous: previous))' {
                        search --no-floppy --fs-uuid --set=root \(image.bootUUID)
                    \(boots)}

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

    /// The key and value of a loader.conf line: systemd-boot splits at the first space or tab and
    /// skips blank lines and comments; nil for those.
    static func loaderSetting(_ line: Substring) -> (key: Substring, value: Substring)? {
        let isBlank: (Character) -> Bool = { $0 == " " || $0 == "\t" }
        let trimmed = line.drop(while: isBlank)
        guard let first = trimmed.first, first != "#" else { return nil }
        let key = trimmed.prefix { !isBlank($0) }
        var value = trimmed.dropFirst(key.count).drop(while: isBlank)
        while let last = value.last, isBlank(last) { value = value.dropLast() }
        return (key, value)
    }

    /// The pattern of loader.conf's `default` (the last such line: systemd-boot keeps the last),
    /// or nil when it names none.
    package static func loaderDefault(_ text: String) -> String? {
        text.split(separator: "\n").compactMap(loaderSetting).last { $0.key == "default" && !$0.value.isEmpty }
            .map { String($0.value) }
    }

    /// loader.conf with one `default` line, naming `pattern`, where its first one was (else at the
    /// top), or with none when `pattern` is nil; the other lines kept.
    static func loaderConfiguration(_ text: String, default pattern: String?) -> String {
        var lines = text.split(separator: "\n", omittingEmptySubsequences: false).map(String.init)
        if lines.last == "" { lines.removeLast() }
        let isDefault = { (line: String) in loaderSetting(Substring(line))?.key == "default" }
        let index = lines.firstIndex(where: isDefault) ?? 0
        lines.removeAll(where: isDefault)
        if let pattern { lines.insert("default \(pattern)", at: min(index, lines.count)) }
        return lines.isEmpty ? "" : lines.joined(separator: "\n") + "\n"
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
