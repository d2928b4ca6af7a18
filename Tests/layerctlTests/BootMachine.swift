import Foundation
import Glibc
import Testing

/// What the boot tests boot: a demo image whose init is a probe, Debian's kernel, initramfs images
/// made with boot/'s dracut module and mkinitcpio hook, an ext4 disk holding the image, and QEMU.
final class BootMachine: Sendable {
    static let kernelDirectory = Harness.demoOut + "/kernel"
    static let diskUUID = "7a3c2a64-1c4e-4d5e-9a43-5b7d7b3c0f01"
    static let imagePath = "/images/probe.squashfs"

    /// Why the boot tests cannot run here, or nil when they can.
    static var missing: String? {
        if !Harness.canBuild { return "\(Harness.cannotBuildReason)" }
        if !FileManager.default.fileExists(atPath: kernelDirectory + "/vmlinuz") {
            return "needs Debian's kernel in \(kernelDirectory) (run scripts/fetch-kernel.sh)"
        }
        for tool in ["/usr/bin/qemu-system-x86_64", "/usr/bin/dracut", "/usr/bin/cpio", "/bin/busybox"]
        where !FileManager.default.isExecutableFile(atPath: tool) {
            return "needs \(tool) (scripts/install-deps.sh installs it)"
        }
        return nil
    }

    /// Built once for all boot tests.
    static let shared = Result { try BootMachine() }

    let folder: String
    /// The demo's layer files with the probe's.
    private let layers: String
    let image: String
    /// The store that holds the probe stack (layer `probe`).
    let store: String
    let dracutInitrd: String
    /// dracut with systemd as the initramfs's init.
    let dracutSystemdInitrd: String
    let mkinitcpioInitrd: String
    /// mkinitcpio with `systemd` in HOOKS: systemd as the initramfs's init, layerctl's sd-layerctl hook.
    let mkinitcpioSystemdInitrd: String
    /// The ext4 disk with the image at `imagePath`, and one with the image replaced by junk.
    let disk: String
    let junkDisk: String
    let imageDigest: String

    private init() throws {
        folder = try Harness.temporaryDirectory("boot")
        let version = try String(contentsOfFile: Self.kernelDirectory + "/version", encoding: .utf8)
            .trimmingCharacters(in: .whitespacesAndNewlines)

        // The dracut flavour, made as demo/vm.sh makes it.
        let boot = Harness.packageRoot + "/boot"
        dracutInitrd = folder + "/initrd-dracut.img"
        try Self.shell(
            "bash '\(Harness.packageRoot)/scripts/make-initramfs.sh' '\(dracutInitrd)' '\(Self.kernelDirectory)'")
        dracutSystemdInitrd = folder + "/initrd-dracut-systemd.img"
        try Self.shell(
            "LAYERCTL_DRACUT_SYSTEMD=1 bash '\(Harness.packageRoot)/scripts/make-initramfs.sh' '\(dracutSystemdInitrd)' '\(Self.kernelDirectory)'"
        )

        // The image carries Debian's kernel and the dracut initramfs in /boot, as Arch's does its own.
        layers = try Harness.demoLayers()
        try Self.probeLayer.write(toFile: layers + "/probe.yaml", atomically: false, encoding: .utf8)
        try Self.shell(
            """
            cp '\(Self.kernelDirectory)/vmlinuz' '\(layers)/vmlinuz-linux'
            cp '\(dracutInitrd)' '\(layers)/initramfs-linux.img'
            """)
        image = folder + "/probe.squashfs"
        store = folder + "/store"
        let build = try Harness.run([
            "build", layers + "/probe.yaml", "--store", store, "-o", image, "--compression", "zstd:3",
        ])
        guard build.status == 0 else { throw MachineError("build the probe image: \(build.stderr)") }
        imageDigest = try Self.shell("sha256sum '\(image)' | cut -c1-64").trimmingCharacters(
            in: .whitespacesAndNewlines)

        // The mkinitcpio flavour: a busybox initramfs whose /init keeps mkinitcpio's hook contract.
        mkinitcpioInitrd = folder + "/initrd-mkinitcpio.img"
        let root = folder + "/mkinitcpio-root"
        let wanted = "virtio_pci virtio_blk crc32c_generic ext4 loop squashfs overlay"
        try Self.shell(
            """
            mkdir -p '\(root)/bin' '\(root)/hooks' '\(root)/usr/lib/layerctl' '\(root)/proc' '\(root)/sys' \
                '\(root)/dev' '\(root)/run' '\(root)/tmp'
            cp /bin/busybox '\(root)/bin/busybox'
            ln -s busybox '\(root)/bin/sh'
            cp '\(Harness.packageRoot)/Tests/layerctlTests/Fixtures/mkinitcpio-init' '\(root)/init'
            cp '\(boot)/mkinitcpio/hooks/layerctl' '\(root)/hooks/layerctl'
            # What mkinitcpio.conf gives init: the runtime hooks, and a splash screen's emergency hook.
            printf '%s\\n' 'HOOKS="layerctl splash"' 'EMERGENCYHOOKS="splash"' >'\(root)/config'
            printf '%s\\n' 'run_emergencyhook() { echo "INIT splash screen stopped"; }' >'\(root)/hooks/splash'
            # fsck's stand-in reports what it was asked to check, and passes it.
            mkdir -p '\(root)/sbin'
            printf '%s\\n' '#!/bin/sh' 'echo "INIT fsck $*"' >'\(root)/sbin/fsck'
            chmod 0755 '\(root)/sbin/fsck'
            cp '\(boot)/layerctl.sh' '\(root)/usr/lib/layerctl/layerctl.sh'
            chmod 0755 '\(root)/init'
            for module in \(wanted); do
                echo "$module" >>'\(root)/modules-to-load'
                modprobe -d '\(Self.kernelDirectory)/root' -S '\(version)' --show-depends "$module" | while read -r _ ko _; do
                    relative=${ko#'\(Self.kernelDirectory)/root'}
                    mkdir -p "$(dirname '\(root)'"$relative")"
                    cp "$ko" '\(root)'"$relative"
                done
            done
            depmod -b '\(root)' '\(version)'
            cd '\(root)' && find . | LC_ALL=C sort | cpio -o -H newc --quiet >'\(mkinitcpioInitrd)'
            """)

        mkinitcpioSystemdInitrd = folder + "/initrd-mkinitcpio-systemd.img"
        try Self.shell(Self.makeMkinitcpioSystemdInitramfs(in: folder + "/sd-layerctl", to: mkinitcpioSystemdInitrd))

        // mkfs.ext4 -d fills the disk from a folder, with no mount.
        disk = folder + "/disk.ext4"
        junkDisk = folder + "/junk.ext4"
        try Self.shell(
            """
            mkdir -p '\(folder)/disk/images' '\(folder)/junk/images'
            cp '\(image)' '\(folder)/disk\(Self.imagePath)'
            head -c 1048576 /dev/urandom >'\(folder)/junk\(Self.imagePath)'
            mkfs.ext4 -q -U \(Self.diskUUID) -L layerctl-test -d '\(folder)/disk' '\(disk)' 160M
            mkfs.ext4 -q -U \(Self.diskUUID) -L layerctl-test -d '\(folder)/junk' '\(junkDisk)' 16M
            """)
    }

    /// Where systemd installs its EFI stub, which `stage --uki` makes a unified kernel image of.
    static let stubPath = "/usr/lib/systemd/boot/efi/linuxx64.efi.stub"
    /// A newer systemd's stub (Debian 13's), which starts the kernel otherwise than Debian 12's.
    static let newerStub = Harness.demoOut + "/stub/linuxx64.efi.stub"

    /// The probe image with systemd's EFI stub where Arch's systemd puts it: Debian 12's (from
    /// systemd-boot-efi), or with `newer` Debian 13's. Each is built once, when a test first asks.
    static func stubProbe(newer: Bool = false) throws -> String {
        try (newer ? newerStubProbe : hostStubProbe).get()
    }

    private static let hostStubProbe = Result { try shared.get().buildStubProbe(stub: stubPath, name: "probe-stub") }
    private static let newerStubProbe = Result { try shared.get().buildStubProbe(stub: newerStub, name: "probe-newer-stub") }

    private func buildStubProbe(stub: String, name: String) throws -> String {
        try Self.shell("cp '\(stub)' '\(layers)/\(name).efi.stub'")
        try "from: probe\nfiles:\n  - path: \(Self.stubPath)\n    source: \(name).efi.stub\n".write(
            toFile: layers + "/\(name).yaml", atomically: false, encoding: .utf8)
        let image = folder + "/\(name).squashfs"
        let build = try Harness.run(["build", layers + "/\(name).yaml", "--store", store, "-o", image])
        guard build.status == 0 else { throw MachineError("build the probe image with systemd's stub \(stub): \(build.stderr)") }
        return image
    }

    /// The probe: the image's init in the tests. It reports what it sees, writes a file, reboots.
    static let probeLayer = """
        from: gaming
        description: The demo system with a probe as init, for the boot tests
        files:
          - path: /boot/vmlinuz-linux
            source: vmlinuz-linux
          - path: /boot/initramfs-linux.img
            source: initramfs-linux.img
          - path: /usr/bin/layerctl-probe
            mode: "0755"
            content: |
              #!/bin/sh
              export PATH=/usr/bin
              mount -t proc proc /proc 2>/dev/null
              while read -r source target type _; do
                  case $target in /|/run/layerctl/*) echo "PROBE mount $target $type $source" ;; esac
              done </proc/mounts
              if [ -e /probe-was-here ]; then echo "PROBE found an earlier write"; else echo "PROBE clean"; fi
              echo written >/probe-was-here && echo "PROBE wrote /probe-was-here"
              sed 's/^/PROBE env /' /run/layerctl/boot.env
              echo "PROBE done"
              reboot -f

        """

    /// The uncompressed kernel when fetch-kernel.sh could unpack it: QEMU boots it as PVH, seconds
    /// faster than the bzImage under TCG. The same kernel either way.
    static var fastKernel: String {
        FileManager.default.fileExists(atPath: kernelDirectory + "/vmlinux")
            ? kernelDirectory + "/vmlinux" : kernelDirectory + "/vmlinuz"
    }

    enum Flavour { case dracut, dracutSystemd, mkinitcpio, mkinitcpioSystemd }

    /// Boots with `disks` (virtio, in order: vda, vdb, …) and `append` on the kernel command line and
    /// returns the serial console's output. A failed boot panics (rd.shell=0, panic=-1) and QEMU
    /// exits at the reboot; a timeout stops a boot that hangs.
    func boot(_ flavour: Flavour, disks: [(path: String, readOnly: Bool)], append: String) throws -> String {
        try boot(
            kernel: Self.fastKernel,
            initrd: [
                .dracut: dracutInitrd, .dracutSystemd: dracutSystemdInitrd, .mkinitcpio: mkinitcpioInitrd,
                .mkinitcpioSystemd: mkinitcpioSystemdInitrd,
            ][flavour]!,
            disks: disks, append: append)
    }

    /// The same with a kernel and an initramfs of the caller's, in `memory` MiB (an initramfs holds
    /// as much again unpacked).
    func boot(
        kernel: String, initrd: String, disks: [(path: String, readOnly: Bool)], append: String, memory: Int = 768
    ) throws -> String {
        var arguments = [
            "-s", "KILL", "300", "qemu-system-x86_64", "-accel", Self.accelerator, "-m", String(memory), "-nographic", "-nic", "none", "-no-reboot",
            "-kernel", kernel, "-initrd", initrd,
            "-append", "console=ttyS0 panic=-1 rd.shell=0 " + append,
        ]
        for disk in disks {
            arguments += ["-drive", "file=\(disk.path),format=raw,if=virtio\(disk.readOnly ? ",readonly=on" : "")"]
        }
        let (status, output) = try KernelMount.run("/usr/bin/timeout", arguments)
        if status == Self.timedOut { throw MachineError("the machine did not stop within 300 s:\n\(output.suffix(3000))") }
        return output
    }

    /// How `timeout -s KILL` ends when the time ran out: as its command, killed (128 + 9), not 124.
    static let timedOut: Int32 = 137

    /// KVM where the host has it (this one's nested module cannot run a stock kernel), else TCG.
    static var accelerator: String {
        FileManager.default.fileExists(atPath: "/sys/module/kvm_intel")
            || FileManager.default.fileExists(atPath: "/sys/module/kvm_amd") ? "kvm" : "tcg"
    }

    /// OVMF, the UEFI firmware QEMU boots a PC with; its variables start as the template's.
    static let firmwareCode = "/usr/share/OVMF/OVMF_CODE_4M.fd"
    static let firmwareVariables = "/usr/share/OVMF/OVMF_VARS_4M.fd"

    /// Why a boot through the firmware cannot run here, or nil when it can.
    static var missingFirmware: String? {
        FileManager.default.fileExists(atPath: firmwareCode)
            ? nil : "needs OVMF's \(firmwareCode) (ovmf, scripts/install-deps.sh)"
    }

    /// OVMF with Secure Boot on, and Debian's test ("snakeoil") key in its PK, KEK and db: it starts
    /// only EFI programs that key signed. Its password is "snakeoil".
    static let secureFirmwareCode = "/usr/share/OVMF/OVMF_CODE_4M.snakeoil.fd"
    static let secureFirmwareVariables = "/usr/share/OVMF/OVMF_VARS_4M.snakeoil.fd"
    static let snakeoilKey = "/usr/share/ovmf/PkKek-1-snakeoil.key"
    static let snakeoilCertificate = "/usr/share/ovmf/PkKek-1-snakeoil.pem"

    /// Boots as a PC with UEFI firmware does, with no -kernel: the firmware starts the boot loader
    /// at EFI/BOOT/BOOTX64.EFI of `esp`, a folder QEMU shows as a FAT disk (vda, read-only), or a
    /// disk image with a GPT whose ESP holds it, and the loader reads its configuration there.
    /// `disks` follow (vdb, …); `variables` is the firmware's variable store, a copy of
    /// `firmwareVariables` (`secureFirmwareVariables` with `secureBoot`) the caller keeps between
    /// boots. With `until`, the machine is stopped once its console shows that text (firmware that
    /// refused every boot option waits for a key for ever).
    func bootFirmware(
        esp: String, disks: [(path: String, readOnly: Bool)], variables: String, secureBoot: Bool = false, until: String? = nil
    ) throws -> String {
        var isFolder: ObjCBool = false
        let system = FileManager.default.fileExists(atPath: esp, isDirectory: &isFolder) && isFolder.boolValue ? "fat:" + esp : esp
        // Secure Boot's variables are written in system management mode alone.
        let machine = secureBoot ? ["-machine", "q35,smm=on", "-global", "driver=cfi.pflash01,property=secure,value=on"] : ["-machine", "q35"]
        var arguments =
            ["-s", "KILL", "300", "qemu-system-x86_64", "-accel", Self.accelerator] + machine + [
                "-m", "768", "-nographic", "-nic", "none", "-no-reboot",
                "-drive", "if=pflash,format=raw,unit=0,readonly=on,file=\(secureBoot ? Self.secureFirmwareCode : Self.firmwareCode)",
                "-drive", "if=pflash,format=raw,unit=1,file=\(variables)",
                "-drive", "file=\(system),format=raw,if=virtio,readonly=on",
            ]
        for disk in disks {
            arguments += ["-drive", "file=\(disk.path),format=raw,if=virtio\(disk.readOnly ? ",readonly=on" : "")"]
        }
        guard let until else {
            let (status, output) = try KernelMount.run("/usr/bin/timeout", arguments)
            if status == Self.timedOut { throw MachineError("the machine did not stop within 300 s:\n\(output.suffix(3000))") }
            return output
        }
        // QEMU itself in the background, without `timeout` (killing that would leave QEMU running).
        let watch = """
            console=$1 text=$2
            shift 2
            "$@" >"$console" 2>&1 </dev/null &
            machine=$!
            for _ in $(seq 300); do
                if ! kill -0 "$machine" 2>/dev/null || grep -qF -- "$text" "$console"; then break; fi
                sleep 1
            done
            kill -KILL "$machine" 2>/dev/null || true
            wait "$machine" || true
            cat "$console"
            """
        let console = (variables as NSString).deletingLastPathComponent + "/console.log"
        defer { unlink(console) }
        let (_, output) = try KernelMount.run("/bin/bash", ["-c", watch, "watch", console, until] + arguments.dropFirst(3))
        if !output.contains(until) { throw MachineError("the console never showed \(until) within 300 s:\n\(output.suffix(3000))") }
        return output
    }

    /// Shell lines that finish the initramfs of a machine of the tests' own, whose files are in the
    /// folder `root` of the current folder: every library `ldd` names for `programs` (their paths
    /// in it), each of `modules` of Debian's kernel with those it needs and their names in
    /// /modules-to-load (for its init to load), then the archive at `out`; `root` goes.
    static func packInitramfs(programs: [String], modules: [String], to out: String) -> String {
        let kernel = kernelDirectory
        return """
            version=$(cat '\(kernel)/version')
            # Each library where the host has it: the programs' run paths and the loader's own folders.
            ldd \(programs.map { "root" + $0 }.joined(separator: " ")) \\
                | awk '$2 == "=>" && $3 ~ /^\\// { print $3 } $1 ~ /^\\// && $1 !~ /:$/ { print $1 }' \\
                | sort -u | while read -r library; do
                mkdir -p "root$(dirname "$library")"
                cp -L "$library" "root$library"
            done
            # A module the kernel has built in has no file.
            for module in \(modules.joined(separator: " ")); do
                echo "$module" >>root/modules-to-load
                modprobe -d '\(kernel)/root' -S "$version" --show-depends "$module" | while read -r kind ko _; do
                    [ "$kind" = insmod ] || continue
                    relative=${ko#'\(kernel)/root'}
                    mkdir -p "root$(dirname "$relative")"
                    cp "$ko" "root$relative"
                done
            done
            depmod -b root "$version"
            (cd root && find . | LC_ALL=C sort | cpio -o -H newc --quiet) >'\(out)'
            rm -rf root
            """
    }

    /// Shell lines that make the initramfs of mkinitcpio with `systemd` in HOOKS, at `out`: the
    /// install hook sd-layerctl runs under stand-ins of mkinitcpio's build functions
    /// (Fixtures/mkinitcpio-build), with layerctl's files laid out as the image has them, and what
    /// it adds goes into a systemd initramfs that dracut makes with no module of its own but
    /// `dracutModules` (crypt: systemd's cryptsetup, as mkinitcpio's sd-encrypt gives it).
    /// mkinitcpio's `systemd` hook gives the same systemd units. `work` is a folder to make.
    static func makeMkinitcpioSystemdInitramfs(
        in work: String, to out: String, dracutModules: [String] = [], include: (source: String, target: String)? = nil
    ) -> String {
        let boot = Harness.packageRoot + "/boot"
        let (added, image) = (work + "/root", work + "/image")
        let extra = include.map { "--include '\($0.source)' '\($0.target)'" } ?? ""
        return """
            mkdir -p '\(image)/usr/lib/layerctl/systemd-initrd' '\(added)/usr/bin' '\(added)/etc' '\(work)/conf.d'
            cp '\(boot)/layerctl.sh' '\(image)/usr/lib/layerctl/layerctl.sh'
            cp '\(boot)'/systemd-initrd/* '\(image)/usr/lib/layerctl/systemd-initrd/'
            # mkinitcpio's base hook: busybox and its applets, but those the systemd hook gives
            # (util-linux's mount, kmod's modprobe) and the ones sd-layerctl adds.
            cp /bin/busybox '\(added)/usr/bin/busybox'
            given=" mount umount modprobe insmod rmmod lsmod depmod modinfo swapon swapoff busybox blkid sha256sum "
            given+=" poweroff reboot halt switch_root init linuxrc "
            for applet in $(/bin/busybox --list); do
                case $given in *" $applet "*) continue ;; esac
                ln -s busybox '\(added)/usr/bin/'"$applet"
            done
            bash '\(Harness.packageRoot)/Tests/layerctlTests/Fixtures/mkinitcpio-build' \
                '\(boot)/mkinitcpio/install/sd-layerctl' '\(added)' '\(image)'
            # What mkinitcpio's systemd hook adds besides systemd's units: /etc/initrd-release (by
            # which systemd tells an initramfs), and udev's rules that load drivers and name disks.
            printf '%s\\n' 'NAME=mkinitcpio' 'ID=mkinitcpio' >'\(added)/etc/initrd-release'
            mkdir -p '\(added)/usr/lib/udev/rules.d'
            for rules in 50-udev-default 60-persistent-storage 64-btrfs 80-drivers 99-systemd; do
                cp "/lib/udev/rules.d/$rules.rules" '\(added)/usr/lib/udev/rules.d/'
            done
            # The tests' stand-in for the emergency shell (emergency.service, which emergency.target
            # requires): the machine powers off.
            printf '%s\\n' '[Unit]' 'DefaultDependencies=no' '[Service]' 'ExecStart=/usr/bin/busybox poweroff -f' \
                >'\(added)/usr/lib/systemd/system/emergency.service'
            version=$(cat '\(kernelDirectory)/version')
            dracut --quiet --force --no-hostonly --conf /dev/null --confdir '\(work)/conf.d' \
                -m "systemd systemd-initrd \(dracutModules.joined(separator: " "))" \
                --install "$(tr '\\n' ' ' <'\(added).binaries')" --include '\(added)' / \(extra) \
                --add-drivers "virtio_blk virtio_pci ext4 crc32c_generic $(tr '\\n' ' ' <'\(added).modules')" \
                --kver "$version" --kmoddir '\(kernelDirectory)/root/lib/modules/'"$version" \
                --no-compress --no-early-microcode '\(out)'
            """
    }

    @discardableResult
    /// Runs `script` with bash (under umask 022, as `Harness.process` starts every tool). Returns
    /// what it printed on stdout; stderr goes only into the error.
    static func shell(_ script: String) throws -> String {
        let result = try Harness.run(["-euo", "pipefail", "-c", script], tool: "/bin/bash")
        guard result.status == 0 else {
            throw MachineError("\(script)\nfailed with \(result.status): \(result.stdout)\(result.stderr)")
        }
        return result.stdout
    }
}

struct MachineError: Error, CustomStringConvertible {
    var description: String
    init(_ description: String) { self.description = description }
}
