import Foundation
import Glibc
import LayerSupport

/// What systemd-boot decides from outside its entries: the EFI variables it leaves for the running
/// system, and loader.conf's `default`.
extension BootStaging {
    /// The vendor GUID of systemd-boot's variables.
    static let loaderVariables = "4a67b082-0a4c-41cf-b6c7-440b29bb8c4f"

    /// The strings of systemd-boot's EFI variable `name`: four bytes of attributes, then UTF-16LE
    /// strings, each ended by a NUL (LoaderEntries lists every entry id, in its menu's order).
    /// Empty when the variable is not there.
    func efiStrings(_ name: String) -> [String] {
        let path = efiVariables + "/\(name)-\(Self.loaderVariables)"
        guard let data = try? FileSystem.readRegularFile(path, atMost: 1 << 20), data.count > 4 else { return [] }
        let bytes = [UInt8](data)
        let units = stride(from: 4, to: bytes.count - 1, by: 2).map { UInt16(bytes[$0]) | UInt16(bytes[$0 + 1]) << 8 }
        return units.split(separator: 0).map { String(decoding: $0, as: UTF16.self) }
    }

    /// The entry systemd-boot's EFI variable LoaderEntryDefault names (set by `bootctl set-default`
    /// or the menu's `d` key), which it follows before loader.conf's `default`; nil when unset.
    func efiDefaultEntry() -> String? { efiStrings("LoaderEntryDefault").first }

    /// Keeps what systemd-boot boots by default as it was before `name`'s entries appear. With no
    /// default in loader.conf nor in its EFI variable, systemd-boot boots its menu's first entry,
    /// and an entry with a sort key, as layerctl's have, sorts before every entry without one (a
    /// hand-written arch.conf): staging alone would make the machine boot the image, a stranger's
    /// pulled one too, where `boot` is the command that says to. LoaderEntries, which systemd-boot
    /// left at this boot, lists its menu in order: its first entry that is not one systemd-boot
    /// made itself (`auto-…`) is the default until now, and becomes loader.conf's `default` when
    /// this boot folder holds it. Says what it did, or, where the machine did not boot through this
    /// systemd-boot, what to do; nil when there is nothing to keep (no loader.conf: no systemd-boot).
    func keepSystemdBootDefault(name: String) throws -> String? {
        let path = loaderConfigurationPath
        guard let text = try? String(contentsOfFile: path, encoding: .utf8),
            BootEntries.loaderDefault(text) == nil, efiDefaultEntry() == nil
        else { return nil }
        let entry = "layerctl-\(name).conf"
        let first = efiStrings("LoaderEntries").first { !$0.hasPrefix("auto-") }
        // The name's entry first already stays first: its new version sorts before every other.
        if first?.lowercased() == entry.lowercased() { return nil }
        if let first, let found = bootFolderEntry(first) {
            try FileSystem.writeAtomically(Data(BootEntries.loaderConfiguration(text, default: found).utf8), to: path)
            return
                "systemd-boot: \(path) named no default, and systemd-boot would have booted \(entry) first; it names \(found), which booted by default until now (layerctl boot \(name) makes \(name) the default)"
        }
        return
            "systemd-boot: \(path) names no default, so systemd-boot boots its menu's first entry, which may now be \(entry) (an entry with a sort key comes before those without): add a default line naming the entry to boot, or run layerctl boot \(name)"
    }

    /// Puts loader.conf's `default` back to what `boot` replaced with the entry of `set`'s name,
    /// which is going: left naming it, systemd-boot would boot its menu's first entry (another
    /// staged image, sorted first). Says what it did; nil when the default names another entry.
    func restoreSystemdBootDefault(_ set: StagedSet) throws -> String? {
        let path = loaderConfigurationPath
        let name = set.current.name
        let entry = "layerctl-\(name).conf"
        guard let text = try? String(contentsOfFile: path, encoding: .utf8),
            BootEntries.loaderDefault(text)?.lowercased() == entry.lowercased()
        else { return nil }
        let isPattern = { (pattern: String) in pattern.contains { "*?[".contains($0) } }
        if let replaced = set.replacedDefault, !replaced.isEmpty, isPattern(replaced) || bootFolderEntry(replaced) != nil {
            try FileSystem.writeAtomically(Data(BootEntries.loaderConfiguration(text, default: replaced).utf8), to: path)
            return "systemd-boot: \(path) names \(replaced) as the default again, as before layerctl boot \(name)"
        }
        try FileSystem.writeAtomically(Data(BootEntries.loaderConfiguration(text, default: nil).utf8), to: path)
        if set.replacedDefault == "" {
            return "systemd-boot: \(path) names no default again, as before layerctl boot \(name)"
        }
        let before = set.replacedDefault.map { ", and \($0), the default before layerctl boot \(name), is gone too" } ?? ""
        return
            "systemd-boot: \(path) named \(entry) as the default\(before); it names none now, so systemd-boot boots its menu's first entry: run layerctl boot with the name to boot, or add a default line"
    }

    /// The id of the entry `id` names in this boot folder or on the ESP, as its file is spelled (a
    /// type #1 entry in loader/entries, a unified kernel image in EFI/Linux; systemd-boot folds the
    /// case of ids, and FAT does not keep it apart); nil when neither has such an entry.
    private func bootFolderEntry(_ id: String) -> String? {
        for partition in [bootDirectory] + (espDirectory.map { [$0] } ?? []) {
            for folder in ["/loader/entries", "/EFI/Linux"] {
                let names = (try? FileSystem.listDirectory(partition + folder)) ?? []
                if let name = names.first(where: { $0.lowercased() == id.lowercased() }) { return name }
            }
        }
        return nil
    }
}
