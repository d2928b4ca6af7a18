import CAlpm
import CLayerSupport
import LayerSupport

/// libalpm's callbacks carry a context pointer; ours is the handle itself, unretained, because the
/// callbacks are cleared with the handle in `alpm_release`.
extension AlpmHandle {
    func installCallbacks() throws {
        let context = Unmanaged.passUnretained(self).toOpaque()
        try check(alpm_option_set_eventcb(raw, { context, event in
            guard let context, let event else { return }
            AlpmHandle.from(context).handle(event: event)
        }, context), "set event callback")
        try check(alpm_option_set_questioncb(raw, { context, question in
            guard let question else { return }
            if let context, question.pointee.type == ALPM_QUESTION_CORRUPTED_PKG {
                let corrupted = question.pointee.corrupted
                AlpmHandle.from(context).corruptedFiles.append(
                    ((string(corrupted.filepath) ?? "?").split(separator: "/").last.map(String.init) ?? "?",
                     String(cString: alpm_strerror(corrupted.reason))))
            }
            if let context, question.pointee.type == ALPM_QUESTION_CONFLICT_PKG,
                AlpmHandle.from(context).answeredConflicts != nil, let conflict = question.pointee.conflict.conflict
            {
                AlpmHandle.from(context).answeredConflicts?.append(
                    (string(conflict.pointee.package1) ?? "?", string(conflict.pointee.package2) ?? "?"))
                question.pointee.conflict.remove = 1  // a resolution only: nothing is committed
                return
            }
            if let context, question.pointee.type == ALPM_QUESTION_SELECT_PROVIDER {
                let select = question.pointee.select_provider
                let dependency = select.depend.flatMap { alpm_dep_compute_string($0) }
                defer { free(dependency) }
                AlpmHandle.from(context).providerChoices.append(
                    ProviderChoice(
                        dependency: dependency.map { String(cString: $0) } ?? "?",
                        providers: AlpmListSequence(select.providers).map { string(alpm_pkg_get_name(OpaquePointer($0))) ?? "?" }))
            }
            AlpmHandle.answer(question)
        }, context), "set question callback")
        try check(alpm_option_set_progresscb(raw, { context, progress, package, percent, howMany, current in
            guard let context else { return }
            AlpmHandle.from(context).handleProgress(
                progress, package: string(package) ?? "", percent: percent, current: Int(current), total: Int(howMany))
        }, context), "set progress callback")
        try check(alpm_option_set_dlcb(raw, { context, file, kind, data in
            guard let context, let file else { return }
            AlpmHandle.from(context).handleDownload(file: String(cString: file), kind: kind, data: data)
        }, context), "set download callback")
        // Errors and warnings only, which are all `handleLog` reads.
        let levels = Int32(ALPM_LOG_ERROR.rawValue | ALPM_LOG_WARNING.rawValue)
        try check(lc_alpm_set_log_sink(raw, levels, { context, level, message in
            guard let context, let message else { return }
            AlpmHandle.from(context).handleLog(level: level, message: String(cString: message))
        }, context), "set log callback")
    }

    private static func from(_ context: UnsafeMutableRawPointer) -> AlpmHandle {
        Unmanaged<AlpmHandle>.fromOpaque(context).takeUnretainedValue()
    }

    private func handle(event: UnsafeMutablePointer<alpm_event_t>) {
        switch event.pointee.type {
        case ALPM_EVENT_PACKAGE_OPERATION_START, ALPM_EVENT_PACKAGE_OPERATION_DONE:
            let op = event.pointee.package_operation
            let package = op.newpkg ?? op.oldpkg
            let name = package.flatMap { string(alpm_pkg_get_name($0)) } ?? ""
            let version = package.flatMap { string(alpm_pkg_get_version($0)) } ?? ""
            if event.pointee.type == ALPM_EVENT_PACKAGE_OPERATION_START {
                currentPackage = name
                observer?(.packageStarted(.init(op.operation), name: name, version: version))
            } else {
                currentPackage = nil
                observer?(.packageFinished(.init(op.operation), name: name, version: version))
            }
        case ALPM_EVENT_HOOK_START where event.pointee.hook.when == ALPM_HOOK_POST_TRANSACTION:
            beforePostTransactionHooks?()
        case ALPM_EVENT_HOOK_RUN_START:
            let run = event.pointee.hook_run
            let name = string(run.name) ?? "?"
            currentHook = name
            observer?(.hookStarted(name: name, description: string(run.desc), position: run.position, total: run.total))
        case ALPM_EVENT_HOOK_RUN_DONE:
            currentHook = nil
        case ALPM_EVENT_PACNEW_CREATED:
            let created = event.pointee.pacnew_created
            observer?(
                .pacnewCreated(
                    file: string(created.file) ?? "?", package: created.newpkg.flatMap { string(alpm_pkg_get_name($0)) } ?? "?",
                    version: created.newpkg.flatMap { string(alpm_pkg_get_version($0)) } ?? "?"))
        case ALPM_EVENT_PACSAVE_CREATED:
            let created = event.pointee.pacsave_created
            observer?(
                .pacsaveCreated(file: string(created.file) ?? "?", package: created.oldpkg.flatMap { string(alpm_pkg_get_name($0)) } ?? "?"))
        case ALPM_EVENT_OPTDEP_REMOVAL:
            let removal = event.pointee.optdep_removal
            let dependency = removal.optdep.flatMap { alpm_dep_compute_string($0) }
            defer { free(dependency) }
            observer?(
                .optionalDependencyRemoved(
                    package: removal.pkg.flatMap { string(alpm_pkg_get_name($0)) } ?? "?",
                    dependency: dependency.map { String(cString: $0) } ?? "?"))
        case ALPM_EVENT_SCRIPTLET_INFO:
            let line = string(event.pointee.scriptlet_info.line) ?? ""
            // By bytes: as Characters, "\r\n" is one, and a CRLF line would keep its end.
            for part in line.utf8.split(separator: 0x0A) {
                observer?(.scriptletOutput(String(decoding: part, as: UTF8.self)))
            }
        default:
            break
        }
    }

    private func handleProgress(
        _ step: alpm_progress_t, package: String, percent: Int32, current: Int, total: Int
    ) {
        let now = MonotonicClock.seconds()
        // Within a step, a change is reported once `reportInterval` has passed since the last,
        // whichever package it is about (the checks before the install go through every package
        // in a few milliseconds, and said each one's 0, 30 and 100 percent: 79 reports for the
        // demo base, each a JSON line to write, read and print), and the step's end is reported.
        if let last = lastProgress, last.step == step {
            let repeated = last.package == package && last.current == current && last.percent == percent
            let stepEnds = percent == 100 && current >= total
            if repeated || (!stepEnds && now - last.at < Self.reportInterval) { return }
        }
        lastProgress = (step, package, percent, current, now)
        observer?(.progress(step: .init(step), package: package, percent: Int(percent), current: current, total: total))
    }

    private func handleDownload(file: String, kind: alpm_download_event_type_t, data: UnsafeMutableRawPointer?) {
        switch kind {
        case ALPM_DOWNLOAD_INIT:
            observer?(.downloadStarted(file: file))
        case ALPM_DOWNLOAD_PROGRESS:
            guard let progress = data?.assumingMemoryBound(to: alpm_download_event_progress_t.self).pointee else {
                return
            }
            let downloaded = Int64(progress.downloaded), total = Int64(progress.total)
            let step = total > 0 ? downloaded * 100 / total : downloaded >> 20
            let now = MonotonicClock.seconds()
            if let last = downloadSteps[file],
                last.step == step || (downloaded != total && now - last.at < Self.reportInterval)
            {
                return
            }
            downloadSteps[file] = (step, now)
            observer?(.downloadProgress(file: file, downloaded: downloaded, total: total))
        case ALPM_DOWNLOAD_COMPLETED:
            downloadSteps[file] = nil
            guard let done = data?.assumingMemoryBound(to: alpm_download_event_completed_t.self).pointee else { return }
            observer?(.downloadCompleted(file: file, succeeded: done.result >= 0, upToDate: done.result == 1))
        default:
            break
        }
    }

    private func handleLog(level: Int32, message: String) {
        let text = message.hasSuffix("\n") ? String(message.dropLast()) : message
        let shown = currentHook.map { "hook \($0): \(text)" } ?? text
        switch UInt32(level) {
        case ALPM_LOG_ERROR.rawValue:
            // libalpm reports a failing scriptlet only through this line, during the package's
            // operation, and a failing hook the same way, while the hook runs.
            if let currentPackage { operationErrors.append((currentPackage, text)) }
            if let currentHook { hookErrors.append((currentHook, text)) }
            recentErrors.append(text)
            observer?(.log(level: .error, message: shown))
        case ALPM_LOG_WARNING.rawValue:
            observer?(.log(level: .warning, message: shown))
        default:
            break
        }
    }

    /// Answers libalpm's questions as `pacman --noconfirm` does: take the default of each prompt.
    private static func answer(_ question: UnsafeMutablePointer<alpm_question_t>) {
        switch question.pointee.type {
        case ALPM_QUESTION_INSTALL_IGNOREPKG:
            // "X is in IgnorePkg. Install anyway? [Y/n]": pacman takes yes, but a layer file that
            // ignores a package said no to it, as libalpm itself does for a dependency.
            question.pointee.install_ignorepkg.install = 0
        case ALPM_QUESTION_REPLACE_PKG:
            question.pointee.replace.replace = 1  // "Replace X with Y? [Y/n]"
        case ALPM_QUESTION_CONFLICT_PKG:
            question.pointee.conflict.remove = 0  // "Remove X? [y/N]": the conflict stops the transaction
        case ALPM_QUESTION_CORRUPTED_PKG:
            question.pointee.corrupted.remove = 1  // "delete it? [Y/n]"
        case ALPM_QUESTION_REMOVE_PKGS:
            question.pointee.remove_pkgs.skip = 0  // "skip the above packages? [y/N]"
        case ALPM_QUESTION_SELECT_PROVIDER:
            question.pointee.select_provider.use_index = 0  // the first provider, pacman's default
        case ALPM_QUESTION_IMPORT_KEY:
            question.pointee.import_key.import = 1  // "Import PGP key? [Y/n]"
        default:
            question.pointee.any.answer = 0
        }
    }
}
