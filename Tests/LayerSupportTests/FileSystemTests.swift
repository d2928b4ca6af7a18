import Foundation
import Glibc
import LayerSupport
import Testing

/// Writing files: several synced together and renamed only when all are, and a scratch write that
/// does not follow a symlink.
@Suite("Writing files")
struct FileSystemTests {
    static func folder() throws -> String {
        var template = Array("/tmp/layerctl-filesystem-XXXXXX".utf8CString)
        guard let made = mkdtemp(&template) else { throw SystemError("make a folder", "/tmp") }
        return String(cString: made)
    }

    /// Foundation's `deletingLastPathComponent` is the oracle where it does not trap; on a
    /// one-character name it does (Swift 6.3), and `parent(of:)` gives what it gives for longer ones.
    @Test("a path's folder is NSString's, and a one-character name has one too")
    func parent() {
        for path in ["/", "", "ab", "/ab", "ab/", "ab/cd", "/ab/cd", "ab//cd", "ab/cd/", "//ab", "/ab//cd//", "a/b", "/a/b", "./ab", "../ab", "é/ü"] {
            #expect(FileSystem.parent(of: path) == (path as NSString).deletingLastPathComponent, "\(path)")
        }
        for (path, parent) in [("b", ""), (".", ""), ("é", ""), ("/b", "/"), ("t/p", "t"), ("b/", "")] {
            #expect(FileSystem.parent(of: path) == parent, "\(path)")
        }
    }

    @Test("files written together all appear, with their bytes, and leave no temporary file")
    func together() throws {
        let folder = try Self.folder()
        defer { try? FileSystem.removeTree(folder) }
        try Data("old".utf8).write(to: URL(fileURLWithPath: folder + "/b"))
        try FileSystem.writeAtomically([(Data("one".utf8), folder + "/a"), (Data("two".utf8), folder + "/b"), (Data(), folder + "/c")])
        #expect(try FileSystem.listDirectory(folder).sorted() == ["a", "b", "c"])
        #expect(FileManager.default.contents(atPath: folder + "/a") == Data("one".utf8))
        #expect(FileManager.default.contents(atPath: folder + "/b") == Data("two".utf8))
        #expect(FileManager.default.contents(atPath: folder + "/c") == Data())
    }

    @Test("when one cannot be written, none is renamed and no temporary file is left")
    func noneOnFailure() throws {
        let folder = try Self.folder()
        defer { try? FileSystem.removeTree(folder) }
        try Data("old".utf8).write(to: URL(fileURLWithPath: folder + "/a"))
        #expect(throws: SystemError.self) {
            try FileSystem.writeAtomically([(Data("new".utf8), folder + "/a"), (Data("x".utf8), folder + "/missing/b")])
        }
        #expect(try FileSystem.listDirectory(folder) == ["a"])
        #expect(FileManager.default.contents(atPath: folder + "/a") == Data("old".utf8))
    }

    @Test("a scratch write refuses a symlink where its file should be")
    func scratchRefusesSymlink() throws {
        let folder = try Self.folder()
        defer { try? FileSystem.removeTree(folder) }
        try Data("target".utf8).write(to: URL(fileURLWithPath: folder + "/target"))
        #expect(symlink(folder + "/target", folder + "/link") == 0)
        #expect(throws: SystemError.self) { try FileSystem.writeFile(Data("x".utf8), to: folder + "/link") }
        #expect(FileManager.default.contents(atPath: folder + "/target") == Data("target".utf8))
        try FileSystem.writeFile(Data("y".utf8), to: folder + "/plain")
        #expect(FileManager.default.contents(atPath: folder + "/plain") == Data("y".utf8))
    }

    /// The folder may be anyone's, or a layer's tree: a symlink left at a guessable temporary name
    /// must not be followed. These are the names the writes used to take (the pid alone).
    @Test("an atomic write or copy never follows what is already at a temporary name beside its file")
    func temporaryNamesAreNotFollowed() throws {
        let folder = try Self.folder()
        defer { try? FileSystem.removeTree(folder) }
        try Data("victim".utf8).write(to: URL(fileURLWithPath: folder + "/victim"))
        try Data("source".utf8).write(to: URL(fileURLWithPath: folder + "/source"))
        for name in ["written", "copied"] {
            #expect(symlink(folder + "/victim", folder + "/\(name).tmp-\(getpid())") == 0)
        }
        try FileSystem.writeAtomically(Data("new".utf8), to: folder + "/written")
        try FileSystem.copyFile(folder + "/source", to: folder + "/copied")
        #expect(FileManager.default.contents(atPath: folder + "/victim") == Data("victim".utf8))
        #expect(FileManager.default.contents(atPath: folder + "/written") == Data("new".utf8))
        #expect(FileManager.default.contents(atPath: folder + "/copied") == Data("source".utf8))
        // What was planted stays as it was; nothing else is left.
        #expect(try FileSystem.listDirectory(folder).sorted() == [
            "copied", "copied.tmp-\(getpid())", "source", "victim", "written", "written.tmp-\(getpid())",
        ])
    }
}
