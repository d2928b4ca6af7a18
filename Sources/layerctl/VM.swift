import ArgumentParser
import Foundation
import LayerBoot
import LayerExport
import LayerSupport
import SquashfsImage

extension LayerCtl {
    struct VM: ParsableCommand, JSONCommand {
        static let configuration = CommandConfiguration(
            commandName: "vm",
            abstract: "Boots an image, or a built layer, in QEMU the way a machine boots it.",
            discussion: """
                The image becomes the VM's first virtio disk, read-only, and the kernel command line says \
                layerctl.image=/dev/vda, so the image's initramfs hook mounts it with a tmpfs overlay exactly as on a \
                real machine: nothing written in the VM survives. The kernel and initramfs are the image's own, from \
                its /boot, unless --kernel and --initrd name others. A layer name is exported to a temporary image \
                first (through the block cache). The serial console is this terminal: Ctrl-A X quits QEMU, and so \
                do reboot and poweroff in the guest. QEMU uses KVM when the host can run it, TCG otherwise.
                """)

        @Argument(help: "An image file, or a layer file name, full key or unique key prefix, or an image reference to pull.")
        var target: String

        @OptionGroup(title: "Registry") var registryArguments: RegistryArguments

        @Option(help: "A kernel on the host to boot instead of the image's.")
        var kernel: String?

        @Option(help: "An initramfs on the host to boot instead of the image's. It needs layerctl's hook.")
        var initrd: String?

        @Option(help: "The VM's memory, as QEMU's -m takes it: 2G (the default), 768M.")
        var memory: String = "2G"

        @Option(help: "The VM's processors (default: the host's, up to 4).")
        var cpus: Int?

        @Option(
            help: ArgumentHelp(
                "Words to add to the kernel command line, such as \"init=/bin/sh\"; may be repeated.",
                valueName: "ARGS"))
        var append: [String] = []

        @Flag(help: "Give the VM no network (by default it has QEMU's user-mode network).")
        var noNetwork = false

        @Flag(
            help:
                "Print the QEMU command instead of running it. What it names in /var/tmp (a layer's export, the kernel and initramfs read out of the image) is removed when layerctl exits: for a command to keep, give an image file, --kernel and --initrd."
        )
        var printCommand = false

        @Flag(help: "With --print-command: print the command as one JSON object, {\"command\": [words]}.")
        var json = false

        @OptionGroup var storeOptions: StoreOptions

        func validate() throws {
            if json && !printCommand { throw ValidationError("--json goes with --print-command; a running VM has the terminal") }
        }

        func run() throws {
            // The pid in the name lets a later vm remove what one killed before its end left (an
            // exported image of the whole stack, most often).
            FileSystem.removeAbandoned(in: "/var/tmp", prefix: "layerctl-vm-")
            var template = Array("/var/tmp/layerctl-vm-\(getpid())-XXXXXX".utf8CString)
            guard let made = mkdtemp(&template) else { throw SystemError("create a folder in", "/var/tmp") }
            let scratch = String(cString: made)
            defer { try? FileManager.default.removeItem(atPath: scratch) }
            // Before anything is exported or pulled, which takes a while.
            let qemu = VirtualMachine.qemu
            if !printCommand && qemu == nil {
                throw BootError(
                    "qemu-system-x86_64 is not installed (Debian: apt install qemu-system-x86; Arch: pacman -S qemu-base)",
                    code: .system)
            }
            var isDirectory: ObjCBool = false
            var image = target
            var name: String?
            if !(FileManager.default.fileExists(atPath: target, isDirectory: &isDirectory) && !isDirectory.boolValue) {
                name = target
                let store = try storeOptions.open()
                let options = try ImageOptions(compression: ImageOptions.defaultCompression)
                let source = try registryArguments.source(target, in: store, json: json, options: options)
                image = scratch + "/image.squashfs"
                let reporter = ExportReporter()
                var request = Exporter.Request(output: image, options: options, knownBlocks: source.knownBlocks)
                if kernel == nil || initrd == nil {
                    request.check = { [target] in
                        if BootFiles.certainlyMissing(in: $0) { throw VirtualMachine.noBootFiles(target) }
                    }
                }
                _ = try Exporter(store: store).export(
                    source.key, request, progress: reporter.progress, warning: reporter.warning)
                reporter.finish()
            }
            var machine = VirtualMachine(image: image)
            machine.name = name
            machine.kernel = kernel
            machine.initrd = initrd
            machine.memory = memory
            if let cpus { machine.cpus = cpus }
            machine.append = append.flatMap { $0.split(whereSeparator: \.isWhitespace).map(String.init) }
            machine.network = !noNetwork
            let boot = try machine.prepare(scratch: scratch)
            let arguments = machine.arguments(kernel: boot.kernel, initrd: boot.initrd)
            if printCommand {
                let command = ["qemu-system-x86_64"] + arguments
                if json { try JSONOutput.print(["command": command]) } else { print(command.map(shellWord).joined(separator: " ")) }
                return
            }
            guard let qemu else { return }  // checked first, but for --print-command
            FileHandle.standardError.write(
                Data(
                    "layerctl: booting \(target) with \(boot.source) under \(VirtualMachine.accelerator.uppercased()); Ctrl-A X quits\n"
                        .utf8))
            let status = try machine.run(qemu: qemu, kernel: boot.kernel, initrd: boot.initrd)
            if status != 0 { throw ExitCode(status) }
        }
    }
}
