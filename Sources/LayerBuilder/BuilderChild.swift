import Alpm
import CLayerSupport
import Foundation
import Glibc
import LayerRecipe
import LayerSupport

/// The builder child, the `build` role of `NamespacedWork`, pid 1 of its new pid namespace: it
/// reports on the event pipe.
///
/// Outside the confinement still, it names the host after the layer, mounts the merged root and
/// tells the parent which mount points it made in the tree (the parent removes them, once the
/// child is gone, before it normalises and scans the tree). Then it enters the build's
/// `Confinement` and does everything that runs the layer's code: the libalpm transaction with
/// its scriptlets, `files:`, `run:` and `boot:`.
enum BuilderChild {
    /// Where libalpm and the layer's commands find the sync databases: a symlink to `syncView`,
    /// which a `run:` step may remove, with /var/lib/pacman around it (a mount point there could
    /// not be), and which no layer keeps. Where a layer below has a folder there (a pulled image's),
    /// the databases are mounted on it instead.
    static let syncPath = String(PackageManagerState.syncDatabases.dropFirst())
    /// Where the root shows the sync databases; the build's changes to them are discarded.
    static let syncView = BuildRoot.buildOwnFolder + "/sync"
    /// Where the root shows the store's package cache, read-only.
    static let packageCache = BuildRoot.buildOwnFolder + "/packages"
    /// Where the root shows its own overlay's upper folder, read-only: what this layer changed.
    static let upperDirectory = BuildRoot.buildOwnFolder + "/layer"

    /// Mounts the root, confines itself, installs, writes files, runs commands, adds boot support,
    /// and reports the packages.
    static func build(_ request: NamespacedWork.Request) -> Int32 {
        var events = EventPipe(layer: "?")
        // What the layer's files and folders are made with, whatever the umask of whoever runs
        // layerctl (libalpm, `files:` and `run:` create with the process's mask), as for pacman
        // run by root: the same inputs give the same modes (`build --check` varies the caller's).
        umask(0o022)
        do {
            // And the limits they run with, whatever `ulimit` the caller has (`BuildLimits`). The
            // stack limit also sets the room the kernel gives a program's arguments and
            // environment (a quarter of it, 2 MiB), which env: and a run: command must fit in.
            let short = try BuildLimits.apply()
            try NamespacedWork.dieWithParent(request)
            let job = try NamespacedWork.readJob(BuildJob.self, at: request.jobPath)
            events = EventPipe(layer: job.layerName)
            if let warning = BuildLimits.warning(short, for: "the build's steps get") { events.send(.warning, warning) }
            if let folders = job.cgroups { try BuildCgroup(folders: folders).enter() }
            try NamespacedWork.settleNamespaces(hostname: job.layerName, network: job.network)
            events.send(.step, "mount")
            var root = job.root
            try root.setUp(resolvConf: job.network && !job.run.isEmpty)
            let syncFolder = try !root.makeLink(syncPath, to: syncView)
            var made = BuildEvent(.mountPoints, layer: job.layerName)
            made.paths = root.createdMountPoints
            events.send(made)
            // libalpm runs scriptlets with this process's environment: make it theirs, not the caller's.
            clearenv()
            for (name, value) in job.commandEnvironment { setenv(name, value, 1) }
            // libalpm's log of this build is open here, before the root is entered, and libalpm
            // reaches it through this process's own descriptor: nothing the layer runs can write
            // to it, and forge or flood the store's pacman.log, as it could through a path.
            let log = open(job.pacmanLog, O_WRONLY | O_APPEND | O_CLOEXEC)
            guard log >= 0 else { throw SystemError("open", job.pacmanLog) }
            var confinement = Confinement(root: job.root.merged)
            confinement.tmpfsSize = job.memoryLimit
            confinement.binds = [
                // `rm -rf /var/lib/pacman/sync/*`, `pacman -Scc` or `-Sy` in a `run:` step change the
                // build's view only; the normaliser leaves the folder out of the layer anyway.
                .init(
                    source: job.syncDirectory + "/sync", target: syncFolder ? "/" + syncPath : syncView,
                    writes: .discarded),
                .init(source: job.packageCache, target: packageCache),
                .init(source: job.upperDirectory, target: upperDirectory),
            ]
            if job.network && !job.run.isEmpty && job.root.canBindResolvConf {
                confinement.binds.append(.init(source: "/etc/resolv.conf", target: "/etc/resolv.conf"))
            }
            try confinement.enter()
            // The event pipe is this process's alone: nothing it starts inherits it.
            _ = fcntl(NamespacedWork.eventDescriptor, F_SETFD, FD_CLOEXEC)
            if try !Confinement.dropPrivileges() && job.network {
                events.send(
                    .warning,
                    "this kernel cannot keep the build's steps from the host's abstract unix sockets (Landlock's scopes need Linux 6.12)"
                )
            }

            let packages = try install(job, log: "/proc/self/fd/\(log)", events: events)
            events.send(.step, "files")
            try writeFiles(job)
            if !job.run.isEmpty {
                events.send(.step, "run")
                try runCommands(job, events: events)
            }
            if let boot = job.boot {
                var event = BuildEvent(.step, layer: job.layerName, message: "boot", current: Int64(job.run.count + 1))
                stamp(&event, job)
                events.send(event)
                try addBootSupport(boot, job, events: events)
            }
            events.send(BuildEvent(.finished, layer: job.layerName, result: packages))
            return 0
        } catch {
            events.send(BuildEvent(failure: error, layer: events.layer))
            return 1
        }
    }

}
