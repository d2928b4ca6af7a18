import Foundation
import Glibc
import LayerSupport
import SquashfsImage

/// Boots an image in QEMU the way a machine boots it: the image is a virtio disk, and the initramfs
/// hook finds it through the same kernel command line a staged image gets (`layerctl.image=`).
public struct VirtualMachine: Sendable {
    public var image: String
    /// What the user named, for messages, when `image` is a file made from it (a layer's export in
    /// a temporary folder).
    public var name: String?
    /// The kernel and initramfs; nil means the image's own, from its /boot.
    public var kernel: String?
    public var initrd: String?
    /// QEMU's -m: megabytes, or with a suffix (512M, 2G).
    public var memory: String = "2G"
    public var cpus: Int = min(4, max(1, sysconf(Int32(_SC_NPROCESSORS_ONLN))))
    /// Words added to the kernel command line.
    public var append: [String] = []
    public var network = true

    public init(image: String) { self.image = image }

    /// qemu-system-x86_64, if it is installed.
    public static var qemu: String? { FileSystem.executable("qemu-system-x86_64") }

    /// KVM when the host can really run a guest with it, TCG otherwise. `/dev/kvm` alone is not
    /// proof: nested modules such as kvm_pvm provide it without running a stock kernel.
    public static var accelerator: String {
        FileManager.default.fileExists(atPath: "/sys/module/kvm_intel")
            || FileManager.default.fileExists(atPath: "/sys/module/kvm_amd") ? "kvm" : "tcg"
    }

    /// The kernel command line: the serial console, the image as the whole first virtio disk, then
    /// the caller's words.
    public var commandLine: String { (["console=ttyS0", "layerctl.image=/dev/vda"] + append).joined(separator: " ") }

    /// QEMU's arguments for `kernel` and `initrd` (files on the host).
    public func arguments(kernel: String, initrd: String) -> [String] {
        let accelerator = Self.accelerator
        var arguments = ["-accel", accelerator]
        if accelerator == "kvm" { arguments += ["-cpu", "host"] }
        arguments += [
            "-m", memory, "-smp", "\(cpus)", "-nographic", "-no-reboot",
            "-kernel", kernel, "-initrd", initrd, "-append", commandLine,
            // A comma in QEMU's option value is written twice; once, it would end the file name
            // (`b,readonly=off.squashfs` set an option of its own).
            "-drive", "file=\(image.replacingOccurrences(of: ",", with: ",,")),format=raw,if=virtio,readonly=on",
        ]
        arguments += network ? ["-nic", "user,model=virtio-net-pci"] : ["-nic", "none"]
        return arguments
    }

    /// Runs `qemu` on this terminal and returns its exit status. Signals that would end layerctl
    /// (SIGINT, SIGTERM, SIGHUP) go on to QEMU instead, so the VM never outlives the command.
    public func run(qemu: String, kernel: String, initrd: String) throws -> Int32 {
        let environment = ProcessInfo.processInfo.environment.map { "\($0.key)=\($0.value)" }
        SignalForwarding.install()
        defer { SignalForwarding.remove() }
        let pid = try spawn(
            qemu, arguments(kernel: kernel, initrd: initrd), environment: environment, keepStdin: true)
        SignalForwarding.forward(to: pid)
        return waitForExit(pid)
    }

    /// What `vm` says of an image, or a stack, with nothing in /boot to start.
    public static func noBootFiles(_ shownAs: String) -> BootError {
        BootError("\(shownAs) has no kernel and initramfs in /boot (vmlinuz-NAME with initramfs-NAME.img); give --kernel and --initrd")
    }

    /// Finds or extracts the kernel and initramfs into `scratch` and returns the files to boot.
    /// An image file (no `name`) is anyone's, so it is read whole first, as `stage` and `diff` read
    /// it: damage is one line here rather than a boot that fails on the guest's screen.
    public func prepare(scratch: String) throws -> (kernel: String, initrd: String, source: String) {
        let walked = name == nil ? try ImageTree(image: image) : nil
        if let kernel, let initrd { return (kernel, initrd, "\(kernel) and \(initrd)") }
        let reader = try walked?.reader ?? SquashfsReader(image: image)
        guard let found = try reader.bootFiles() else { throw Self.noBootFiles(name ?? image) }
        let chosen = (kernel: kernel ?? scratch + "/vmlinuz", initrd: initrd ?? scratch + "/initrd.img")
        if kernel == nil { try reader.copy(found.kernel, to: chosen.kernel) }
        if initrd == nil { try reader.copy(found.initrd, to: chosen.initrd) }
        let source = "\(kernel ?? "the image's " + found.kernel) and \(initrd ?? "the image's " + found.initrd)"
        return (chosen.kernel, chosen.initrd, source)
    }
}
