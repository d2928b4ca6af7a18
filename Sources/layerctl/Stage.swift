import ArgumentParser
import Foundation
import LayerBoot
import LayerExport
import LayerShare
import LayerStore
import LayerSupport
import RegistryClient
import SquashfsImage

/// Where staging keeps and writes things; `stage`, `unstage`, `staged` and `boot` share these.
struct BootOptions: ParsableArguments {
    @Option(help: "The directory the boot loader reads kernels and entries from (the ESP or /boot).")
    var bootDir: String = "/boot"

    @Option(
        help: """
            The EFI system partition, where systemd-boot reads loader/loader.conf, when BOOT-DIR is another \
            partition (XBOOTLDR). Default: /efi or /boot/efi, the first that holds loader/loader.conf, when \
            BOOT-DIR holds none.
            """)
    var espDir: String?

    @Option(help: "GRUB's script folder, where layerctl writes 42_layerctl for grub-mkconfig.")
    var grubDir: String = "/etc/grub.d"

    @Flag(help: "Leave GRUB's script folder alone.")
    var noGrub = false

    @Option(help: "Where staged images are kept (default: the store's boot/ folder, /var/lib/layerctl/boot).")
    var stateDir: String?

    @Option(help: ArgumentHelp("Where the boot hook describes the running image.", visibility: .hidden))
    var runDir: String = "/run/layerctl"

    @Option(help: ArgumentHelp("Where the firmware's variables are.", visibility: .hidden))
    var efivarsDir: String = "/sys/firmware/efi/efivars"

    @OptionGroup var storeOptions: StoreOptions

    /// Staged images live beside the layers, in the store's boot/ folder.
    func staging() throws -> (BootStaging, Store) {
        let store = try storeOptions.open()
        var staging = BootStaging(
            stateDirectory: stateDir ?? store.root + "/boot", bootDirectory: bootDir, grubDirectory: noGrub ? nil : grubDir)
        staging.espDirectory = espDir ?? BootStaging.findSystemPartition(bootDirectory: bootDir)
        staging.runDirectory = runDir
        staging.efiVariables = efivarsDir
        staging.waiting = { printNote($0) }
        staging.told = { printNote($0) }
        return (staging, store)
    }
}

/// How `stage` and `boot REF` sign the kernel they stage, for UEFI Secure Boot.
struct SecureBootOptions: ParsableArguments {
    @Option(
        help: ArgumentHelp(
            """
            The private key that signs the staged kernel for UEFI Secure Boot (with sbsign), with \
            --secure-boot-cert. Default: sbctl's db key, when sbctl made one (where /etc/sbctl/sbctl.conf puts it, \
            else /var/lib/sbctl/keys/db/db.key).
            """, valueName: "KEY"))
    var secureBootKey: String?

    @Option(help: ArgumentHelp("The certificate of --secure-boot-key, one the firmware's db holds.", valueName: "CERT"))
    var secureBootCert: String?

    @Flag(help: "Stage the kernel as the image holds it, though sbctl made keys.")
    var noSecureBootSigning = false

    @Flag(
        help: """
            Stage one unified kernel image (the image's systemd stub with its kernel, initramfs and command line), \
            so that the Secure Boot signature covers all three.
            """)
    var uki = false

    @Option(help: ArgumentHelp("The folder sbctl's files are looked up in, as in a chroot (a test's).", visibility: .hidden))
    var sbctlRoot: String?

    func validate() throws {
        if (secureBootKey == nil) != (secureBootCert == nil) {
            throw ValidationError("--secure-boot-key and --secure-boot-cert go together")
        }
        if noSecureBootSigning && secureBootKey != nil {
            throw ValidationError("--no-secure-boot-signing and --secure-boot-key exclude each other")
        }
    }

    /// The key that signs: the one given, else sbctl's; nil with --no-secure-boot-signing.
    func signing() throws -> KernelSigning? {
        if noSecureBootSigning { return nil }
        if let secureBootKey, let secureBootCert {
            // As the staged set records it, whatever folder the next command starts in.
            func absolute(_ path: String) -> String { URL(fileURLWithPath: path).standardizedFileURL.path }
            return KernelSigning(key: absolute(secureBootKey), certificate: absolute(secureBootCert))
        }
        return try KernelSigning.sbctlKeys(root: sbctlRoot ?? "")
    }

    /// What `stage` and `boot REF` say of the signature of what they staged; nil when unsigned.
    static func signatureLine(_ staged: StagedImage) -> String? {
        staged.secureBootCertificate.map {
            "  \(staged.unifiedKernel == true ? "unified kernel image" : "kernel") signed for Secure Boot: \($0)"
        }
    }

    /// Says, on a machine booted with Secure Boot on, that `staged`'s kernel was staged unsigned.
    static func warnIfUnsigned(_ staged: StagedImage, boot: BootOptions) {
        if let warning = KernelSigning.unsignedWarning(staged, efiVariables: boot.efivarsDir) { printNote(warning) }
    }
}

extension LayerCtl {
    struct Stage: ParsableCommand, JSONCommand {
        static let configuration = CommandConfiguration(
            commandName: "stage",
            abstract: "Puts an image where the boot loader and the initramfs hook find it.",
            discussion: """
                The image (a built layer, exported first, or an image file) is kept in the store's boot/NAME/ \
                folder; its kernel and initramfs, read out of the image's /boot, go to BOOT-DIR/layerctl/NAME/; a \
                Boot Loader Specification entry (BOOT-DIR/loader/entries/layerctl-NAME.conf, for systemd-boot and \
                GRUB's blscfg) and GRUB-DIR/42_layerctl (for plain GRUB, after grub-mkconfig) boot it with \
                layerctl.image=, the filesystem's UUID and the image's sha256. The version staged before stays as \
                layerctl-NAME-previous, so there is always a way back. `layerctl boot NAME` makes it the default.
                """)

        @Argument(help: "A layer file name, full key or unique key prefix, an image file, or an image reference to pull.")
        var target: String

        @OptionGroup(title: "Registry") var registryArguments: RegistryArguments

        @Option(help: "The name to stage under (default: the layer's name, or the image file's name).")
        var name: String?

        @Option(help: ArgumentHelp("Words to add to the kernel command line; may be repeated.", valueName: "ARGS"))
        var append: [String] = []

        @Flag(help: "Print one JSON object: the staged image, its entry, and the previous version.")
        var json = false

        @OptionGroup var boot: BootOptions

        @OptionGroup(title: "Secure Boot") var secureBoot: SecureBootOptions

        func run() throws {
            try BootStaging.requireRoot("layerctl stage")
            var (staging, store) = try boot.staging()
            staging.signing = try secureBoot.signing()
            staging.unifiedKernel = secureBoot.uki
            var isDirectory: ObjCBool = false
            let isImage =
                FileManager.default.fileExists(atPath: target, isDirectory: &isDirectory) && !isDirectory.boolValue
            let words = append.flatMap { $0.split(whereSeparator: \.isWhitespace).map(String.init) }
            // The versions as the staging saved them: read again after its lock is released, the way
            // back could be another stage's.
            let set: StagedSet
            if isImage {
                let stem = ((target as NSString).lastPathComponent as NSString).deletingPathExtension
                set = try staging.stage(name: name ?? stem, source: target, append: words) {
                    try BootStaging.copyImage(from: target, to: $0)
                }
            } else {
                let options = try ImageOptions(compression: ImageOptions.defaultCompression)
                let source = try registryArguments.source(
                    target, in: store, json: json, options: options, overlapCommit: true)
                set = try Self.stage(
                    source.key, name: name, asked: target, append: words, staging: staging, store: store, options: options,
                    knownBlocks: source.knownBlocks, committing: source.committing)
            }
            let (staged, previous) = (set.current, set.previous)
            SecureBootOptions.warnIfUnsigned(staged, boot: boot)
            let entry = "\(boot.bootDir)/loader/entries/layerctl-\(staged.name).conf"
            if json {
                struct Staged: Encodable {
                    var staged: StagedImage
                    var entry: String
                    var previous: StagedImage?
                }
                try JSONOutput.print(Staged(staged: staged, entry: entry, previous: previous))
                return
            }
            print("staged \(staged.name) \(staged.id): \(staged.image) (\(Self.size(staged.size)))")
            if staged.unifiedKernel == true {
                print("  unified kernel image (kernel, initramfs and command line): \(staged.kernel)")
            } else {
                print("  kernel and initramfs: \(staged.kernel), \(staged.initrd)")
            }
            if let line = SecureBootOptions.signatureLine(staged) { print(line) }
            print("  entry: \(entry)")
            print("  command line: \(staged.commandLine)")
            if let previous {
                print("  previous: \(previous.id), kept as layerctl-\(staged.name)-previous")
            }
            if !boot.noGrub {
                print("  GRUB: run grub-mkconfig -o \(boot.bootDir)/grub/grub.cfg to add it to GRUB's menu")
            }
        }

        /// Exports layer `key` through the block cache and stages it under `name`, else its layer's
        /// name; `knownBlocks` come from the pull that stored it, when one just did. When that
        /// pull's commit of the layer is still `committing`, the export reads the layer from where
        /// it is, and the image is staged only once the layer is in the store.
        static func stage(
            _ key: String, name: String?, asked: String? = nil, append: [String], staging: BootStaging, store: Store,
            options: ImageOptions, knownBlocks: BlockDigests?, committing: ImagePull.TopCommit? = nil
        ) throws -> StagedSet {
            // The commit ends, whatever happens to the export: the pull itself succeeded.
            defer { try? committing?.finish() }
            let uncommitted = committing.map(\.layer)
            let layerName = try uncommitted?.record.name ?? store.name(of: key, asked: asked ?? key)
            try BootStaging.validate(name: name ?? layerName)
            // The block cache is updated while the image is staged.
            var update: Exporter.CacheUpdate?
            let reporter = ExportReporter()
            defer { if let problem = update?.finish() { reporter.warning(problem) } }
            let shownAs = "layer \(layerName) (\(key.prefix(12)))"
            return try staging.stage(name: name ?? layerName, source: key, shownAs: shownAs, append: append) { output in
                let result: Exporter.Result
                var request = Exporter.Request(
                    output: output, options: options, digest: true, knownBlocks: knownBlocks, uncommitted: uncommitted)
                request.check = { if BootFiles.certainlyMissing(in: $0) { throw BootStaging.noBootFiles(shownAs) } }
                (result, update) = try Exporter(store: store).exportLeavingCacheUpdate(
                    key, request, progress: reporter.progress, warning: reporter.warning)
                reporter.finish()
                // Staged only once the layer is in the store; a commit that failed fails the staging.
                try committing?.finish()
                return result.sha256
            }
        }

        static func size(_ bytes: UInt64) -> String {
            String(format: "%.1f MiB", Double(bytes) / 1_048_576)
        }
    }

    struct Unstage: ParsableCommand, JSONCommand {
        static let configuration = CommandConfiguration(
            commandName: "unstage",
            abstract: "Removes a staged image, its kernel, initramfs and boot entries.",
            discussion: """
                Without --all it removes the current version, and the previous one becomes current again. The \
                image the machine runs now is only removed with --force.
                """)

        @Argument(help: "The staged name.")
        var name: String

        @Flag(help: "Remove the previous version too.")
        var all = false

        @Flag(help: "Remove even the image running now.")
        var force = false

        @Flag(help: "Print one JSON object: the versions removed.")
        var json = false

        @OptionGroup var boot: BootOptions

        func run() throws {
            try BootStaging.requireRoot("layerctl unstage")
            let (staging, _) = try boot.staging()
            let removed = try staging.unstage(name: name, all: all, force: force)
            if json { return try JSONOutput.print(["unstaged": removed]) }
            for image in removed { print("unstaged \(image.name) \(image.id)") }
        }
    }

    struct Staged: ParsableCommand, JSONCommand {
        static let configuration = CommandConfiguration(
            commandName: "staged",
            abstract: "Lists the staged images, marking the one running now.",
            discussion: "Each name shows its current version and the previous one kept as the way back.")

        @Flag(help: "Print one JSON object: the staged sets, each version with a running flag.")
        var json = false

        @OptionGroup var boot: BootOptions

        func run() throws {
            let (staging, _) = try boot.staging()
            let sets = try staging.staged()
            if json {
                struct Version: Encodable {
                    var image: StagedImage
                    var previous: Bool
                    var running: Bool
                    var missing: [String]
                }
                let versions = sets.flatMap { set in
                    set.versions.enumerated().map {
                        Version(
                            image: $0.element, previous: $0.offset == 1, running: staging.isRunning($0.element),
                            missing: staging.missingFiles($0.element))
                    }
                }
                try JSONOutput.print(["staged": versions])
                return
            }
            if sets.isEmpty {
                print("nothing is staged")
                return
            }
            let secureBoot = KernelSigning.secureBootEnabled(efiVariables: boot.efivarsDir)
            for set in sets {
                for (offset, image) in set.versions.enumerated() {
                    let missing = staging.missingFiles(image).map { FileSystem.split($0).name }
                    let booted = image.unifiedKernel == true ? "unified kernel image" : "kernel"
                    let marks = [
                        offset == 1 ? "previous" : nil, staging.isRunning(image) ? "running" : nil,
                        missing.isEmpty ? nil : "cannot boot: \(missing.joined(separator: ", ")) gone or cut short",
                        image.secureBootCertificate != nil
                            ? "\(booted) signed for Secure Boot"
                            : secureBoot ? "\(booted) not signed, and Secure Boot is on" : nil,
                    ].compactMap { $0 }
                    print(
                        "\(offset == 0 ? image.name : "  ")\t\(image.id)\t\(Stage.size(image.size))\t\(image.stagedAt)"
                            + (marks.isEmpty ? "" : "\t(\(marks.joined(separator: ", ")))"))
                }
            }
        }
    }

    struct Boot: ParsableCommand, JSONCommand {
        static let configuration = CommandConfiguration(
            commandName: "boot",
            abstract: "Makes a staged image the default boot, or with --once the next one.",
            discussion: """
                systemd-boot: the default is the `default` line of loader/loader.conf on the ESP (BOOT-DIR, or \
                ESP-DIR); --once asks bootctl set-oneshot. GRUB: saved_entry (or next_entry with --once) in \
                BOOT-DIR/grub/grubenv, which GRUB follows when /etc/default/grub says GRUB_DEFAULT=saved. The \
                loaders are those whose configuration BOOT-DIR holds, unless --loader names one.

                Given an image reference (REGISTRY/REPOSITORY[:TAG|@DIGEST]) instead, boot pulls it, exports and stages \
                it (as `layerctl stage` does, under the repository's last component unless --name says otherwise), \
                then makes it the default.
                """)

        @Argument(help: "The staged name, or an image reference to pull, stage and boot.")
        var name: String

        @Option(name: .customLong("name"), help: "With an image reference: the name to stage it under.")
        var stageName: String?

        @OptionGroup(title: "Registry") var registryArguments: RegistryArguments

        @Flag(help: "Boot it the next time only.")
        var once = false

        @Option(help: "systemd-boot or grub (default: each one BOOT-DIR has a configuration for).")
        var loader: String?

        @Flag(help: "Print one JSON object: the name, --once, the loaders, and what each was told.")
        var json = false

        @OptionGroup var boot: BootOptions

        @OptionGroup(title: "Secure Boot, for an image reference") var secureBoot: SecureBootOptions

        func validate() throws {
            if let loader, BootStaging.Loader(rawValue: loader) == nil {
                throw ValidationError("unknown loader '\(loader)'; use systemd-boot or grub")
            }
            if secureBoot.secureBootKey != nil && !ImageReference.looksLikeReference(name) {
                throw ValidationError(
                    "--secure-boot-key signs the kernel of an image reference that boot stages; \(name) is staged already "
                        + "(stage it again with the key)")
            }
            if secureBoot.uki && !ImageReference.looksLikeReference(name) {
                throw ValidationError(
                    "--uki makes a unified kernel image of an image reference that boot stages; \(name) is staged already "
                        + "(stage it again with --uki)")
            }
        }

        func run() throws {
            try BootStaging.requireRoot("layerctl boot")
            var (staging, store) = try boot.staging()
            // The staging of a REF may keep loader.conf's default; the lines below replace it: no note.
            staging.told = nil
            var name = name
            if ImageReference.looksLikeReference(name) {
                // Only what boot stages is signed: a staged name's kernel is staged already.
                staging.signing = try secureBoot.signing()
                staging.unifiedKernel = secureBoot.uki
                let reference = try registryArguments.reference(name)
                let options = try ImageOptions(compression: ImageOptions.defaultCompression)
                let source = try registryArguments.source(name, in: store, json: json, options: options, overlapCommit: true)
                let staged = try Stage.stage(
                    source.key, name: stageName ?? reference.shortName, append: [], staging: staging, store: store,
                    options: options, knownBlocks: source.knownBlocks, committing: source.committing
                ).current
                SecureBootOptions.warnIfUnsigned(staged, boot: boot)
                if !json {
                    print("staged \(staged.name) \(staged.id): \(staged.image) (\(Stage.size(staged.size)))")
                    if let line = SecureBootOptions.signatureLine(staged) { print(line) }
                }
                name = staged.name
            }
            let loaders = loader.flatMap(BootStaging.Loader.init).map { [$0] } ?? staging.detectedLoaders()
            let done = try staging.makeDefault(name: name, once: once, loaders: loaders)
            // The default is made: what is said of it cannot fail the command.
            if !ImageReference.looksLikeReference(self.name),
                let set = (try? staging.staged())?.first(where: { $0.current.name == name })
            {
                SecureBootOptions.warnIfUnsigned(set.current, boot: boot)
            }
            if json {
                struct Made: Encodable {
                    var name: String
                    var once: Bool
                    var loaders: [String]
                    var done: [String]
                }
                return try JSONOutput.print(Made(name: name, once: once, loaders: loaders.map(\.rawValue), done: done))
            }
            for line in done { print(line) }
        }
    }
}
