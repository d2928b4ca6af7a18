import Foundation
import LayerSupport

/// The account files of a system (`/etc/passwd`, `/etc/group`, `/etc/shadow`, `/etc/gshadow`), as
/// text: what `useradd`, `usermod`, `passwd` and `gpasswd` change on a running system, and what the
/// next boot forgets.
public struct AccountFiles: Sendable, Equatable {
    public var texts: [String: String] = [:]

    public static let paths = ["/etc/passwd", "/etc/group", "/etc/shadow", "/etc/gshadow"]

    /// Every file shadow's tools write beside the account files: their backups, their lock, and the
    /// subordinate ids `useradd` gives a new user. A build's `useradd` writes them again.
    static let written: Set<String> = Set(
        (paths + ["/etc/subuid", "/etc/subgid"]).flatMap { [$0, $0 + "-"] } + ["/etc/.pwd.lock"])

    public init(read: (String) throws -> [UInt8]?) rethrows {
        for path in Self.paths {
            if let bytes = try read(path) { texts[path] = String(decoding: bytes, as: UTF8.self) }
        }
    }

    public init() {}

    struct User: Equatable {
        var uid, gid, gecos, home, shell, password: String
    }

    struct Group: Equatable {
        var gid: String
        var members: [String]
    }

    /// The users, in the order `/etc/passwd` lists them; each password from `/etc/shadow` when it
    /// has the user, as the system reads it.
    var users: [(name: String, user: User)] {
        let shadow = Dictionary(
            fields("/etc/shadow", count: 9).map { ($0[0], $0[1]) }, uniquingKeysWith: { first, _ in first })
        return fields("/etc/passwd", count: 7).map { field in
            (field[0], User(uid: field[2], gid: field[3], gecos: field[4], home: field[5], shell: field[6],
                            password: shadow[field[0]] ?? field[1]))
        }
    }

    var groups: [(name: String, group: Group)] {
        fields("/etc/group", count: 4).map { field in
            (field[0], Group(gid: field[2], members: field[3].split(separator: ",").map(String.init)))
        }
    }

    /// The lines of `path` with `count` colon-separated fields; others (comments, NIS's `+`) are not
    /// accounts the tools make.
    private func fields(_ path: String, count: Int) -> [[String]] {
        (texts[path] ?? "").split(separator: "\n").compactMap { line in
            let field = line.split(separator: ":", omittingEmptySubsequences: false).map(String.init)
            guard field.count == count, !field[0].isEmpty, !field[0].hasPrefix("+"), !field[0].hasPrefix("-") else { return nil }
            return field
        }
    }
}

/// The commands that make the accounts of `now` from those of `before`, as a layer's `run:` lines:
/// what `useradd -m -G wheel steve` and `passwd steve` did on a running system, done again in a
/// build, with the ids, groups, home, shell and password hash they gave.
enum AccountDraft {
    /// A password field that says no password can be used: useradd's default, so not written.
    static let locked: Set<String> = ["!", "!!", "*", "!*", "x"]

    /// The names of users and groups that the `sysusers.d` files (`u NAME …`, `g NAME …`) in
    /// `folders` declare: a package's, made by the libalpm hook of systemd-sysusers when the package
    /// is installed (and by systemd at boot), so a build makes them without a command, and a
    /// `groupadd` of one there would fail, for it is made.
    static func declared(in folders: [String]) -> Set<String> {
        var names = Set<String>()
        for folder in folders {
            for file in (try? FileSystem.listDirectory(folder)) ?? [] where file.hasSuffix(".conf") {
                guard let bytes = FileSystem.contents(folder + "/" + file) else { continue }
                for line in String(decoding: bytes, as: UTF8.self).split(separator: "\n") {
                    let words = line.split(whereSeparator: { $0 == " " || $0 == "\t" })
                    if words.count >= 2, ["u", "u!", "g"].contains(words[0]) { names.insert(String(words[1])) }
                }
            }
        }
        return names
    }

    /// The commands, and the users added with their homes: `homes` says which folders were made
    /// since boot, for `-m`; the users and groups `packaged` names are the packages' to make.
    static func commands(before: AccountFiles, now: AccountFiles, madeFolders homes: Set<String>, packaged: Set<String> = [])
        -> (commands: [String], newHomes: [String: String])
    {
        let (usersBefore, usersNow) = (Dictionary(before.users, uniquingKeysWith: { a, _ in a }), now.users)
        let (groupsBefore, groupsNow) = (Dictionary(before.groups, uniquingKeysWith: { a, _ in a }), now.groups)
        let nowUserNames = Set(usersNow.map(\.name))
        let nowGroups = Dictionary(groupsNow, uniquingKeysWith: { a, _ in a })
        var commands: [[String]] = []
        var newHomes: [String: String] = [:]

        // Who is gone goes first: a group goes only once no user has it as theirs. userdel takes
        // a user's own group with it (its name and id, as useradd makes it), so groupdel does not.
        var ownGroups = Set<String>()
        for (name, user) in before.users where !nowUserNames.contains(name) {
            commands.append(["userdel", name])
            if groupsBefore[name]?.gid == user.gid { ownGroups.insert(name) }
        }
        for (name, _) in before.groups where nowGroups[name] == nil && !ownGroups.contains(name) {
            commands.append(["groupdel", name])
        }
        for (name, group) in groupsNow {
            if let old = groupsBefore[name] {
                if old.gid != group.gid { commands.append(["groupmod", "-g", group.gid, name]) }
            } else if !packaged.contains(name) {
                commands.append(["groupadd", "-g", group.gid, name])
            }
        }
        // The member lists the commands leave, in the order they add to them: where that is not
        // the order of now (who joined first), `gpasswd -M` sets the list last.
        // userdel takes the users it removes off every list.
        let removed = Set(before.users.map(\.name)).subtracting(nowUserNames)
        var members = Dictionary(
            groupsNow.map { ($0.name, (groupsBefore[$0.name]?.members ?? []).filter { !removed.contains($0) }) },
            uniquingKeysWith: { a, _ in a })
        func groupName(_ gid: String) -> String { groupsNow.first { $0.group.gid == gid }?.name ?? gid }
        func memberships(_ name: String, _ groups: [(name: String, group: AccountFiles.Group)]) -> [String] {
            groups.filter { $0.group.members.contains(name) }.map(\.name)
        }
        for (name, user) in usersNow {
            let groups = memberships(name, groupsNow)
            guard let old = usersBefore[name] else {
                if packaged.contains(name) {
                    for group in groups { members[group, default: []].append(name) }
                    continue
                }
                var words = ["useradd", homes.contains(user.home) ? "-m" : "-M", "-u", user.uid, "-g", groupName(user.gid)]
                if !groups.isEmpty { words += ["-G", groups.joined(separator: ",")] }
                for group in groups { members[group, default: []].append(name) }
                if !user.gecos.isEmpty { words += ["-c", user.gecos] }
                words += ["-d", user.home, "-s", user.shell]
                if !locked.contains(user.password) { words += ["-p", user.password] }
                commands.append(words + [name])
                if homes.contains(user.home) { newHomes[user.home] = name }
                continue
            }
            var words = ["usermod"]
            if old.uid != user.uid { words += ["-u", user.uid] }
            if old.gid != user.gid { words += ["-g", groupName(user.gid)] }
            if old.gecos != user.gecos { words += ["-c", user.gecos] }
            if old.home != user.home { words += ["-d", user.home] }
            if old.shell != user.shell { words += ["-s", user.shell] }
            if old.password != user.password { words += ["-p", user.password] }
            let groupsBeforeNames = Set(memberships(name, before.groups))
            let joined = groups.filter { !groupsBeforeNames.contains($0) }
            if !joined.isEmpty { words += ["-a", "-G", joined.joined(separator: ",")] }
            for group in joined { members[group, default: []].append(name) }
            if words.count > 1 { commands.append(words + [name]) }
            for left in memberships(name, before.groups) where !groups.contains(left) && nowGroups[left] != nil {
                commands.append(["gpasswd", "-d", name, left])
                members[left]?.removeAll { $0 == name }
            }
        }
        // Members of no user in passwd (a user of LDAP, or one removed by hand) and the order of
        // joining: the list as it is now.
        for (name, group) in groupsNow where members[name] != group.members {
            commands.append(["gpasswd", "-M", group.members.joined(separator: ","), name])
        }
        return (commands.map { $0.map(shellWord).joined(separator: " ") }, newHomes)
    }
}
