/* jobrun's "Jobs" page for Cockpit: plain JavaScript on cockpit.js, no build step.
 *
 * Everything goes through jobrund's D-Bus API on the system bus (org.jobrun.Manager1), called by
 * cockpit's bridge as the logged-in user: jobrund and its polkit rules decide what this user may
 * see and do, exactly as for the CLI. A job's output is the CLI's `jobrun logs --follow`, run as
 * that user (cockpit.spawn): jobrund's Logs method hands over a pipe as a unix fd, which cockpit.js
 * cannot give a page (docs/DESIGN.md). The start form is built from settings.json,
 * which packaging/gen-cockpit-settings writes from the settings table.
 */
"use strict";

(function () {
    var BUS_NAME = "org.jobrun.Manager1";
    var PATH = "/org/jobrun/Manager1";
    var IFACE = "org.jobrun.Manager1";
    var POLL_MS = 1500;

    var client = null;
    var me = { user: null, admin: false };
    var settings = [];
    var jobs = [];
    var selected = null; // id of the job shown in detail
    var follower = null; // the running `jobrun logs --follow`

    function $(id) { return document.getElementById(id); }

    function call(method, args) {
        return client.call(PATH, IFACE, method, args);
    }

    function errorText(ex) {
        if (!ex)
            return "unknown error";
        return ex.message || ex.problem || String(ex);
    }

    function show(el, text) {
        el.textContent = text || "";
        el.hidden = !text;
    }

    /* -- the start form, from the settings table ------------------------------------------- */

    function settingRow(s) {
        var row = document.createElement("div");
        row.className = "row";
        row.dataset.field = s.field;
        var label = document.createElement("label");
        var id = "setting-" + s.field;
        label.htmlFor = id;
        label.textContent = s.flag;
        var input;
        if (s.kind === "switch") {
            input = document.createElement("select");
            [["", "default (" + (s["default"] ? s.on : s.off) + ")"], ["on", s.on], ["off", s.off]]
                    .forEach(function (o) {
                        var opt = document.createElement("option");
                        opt.value = o[0];
                        opt.textContent = o[1];
                        input.appendChild(opt);
                    });
        } else if (s.choices) {
            input = document.createElement("select");
            [""].concat(s.choices).forEach(function (c) {
                var opt = document.createElement("option");
                opt.value = c;
                opt.textContent = c || "default";
                input.appendChild(opt);
            });
        } else if (s.kind === "list") {
            input = document.createElement("textarea");
            input.rows = 2;
            input.placeholder = s.metavar + " (one per line)";
        } else {
            input = document.createElement("input");
            input.placeholder = s.metavar;
        }
        input.id = id;
        input.name = s.field;
        input.title = s.help;
        var help = document.createElement("span");
        help.className = "help";
        help.textContent = s.help;
        row.appendChild(label);
        row.appendChild(input);
        row.appendChild(help);
        return row;
    }

    /* The D-Bus options: only what the user set, as the same text the CLI would pass. */
    function formOptions() {
        var options = {};
        settings.forEach(function (s) {
            var value = $("setting-" + s.field).value;
            if (s.kind === "switch") {
                if (value)
                    options[s.field] = { t: "b", v: value === "on" };
            } else if (s.kind === "list") {
                var items = value.split("\n").filter(function (l) { return l.trim() !== "" });
                if (items.length)
                    options[s.field] = { t: "as", v: items };
            } else if (value.trim() !== "") {
                options[s.field] = { t: "s", v: value.trim() };
            }
        });
        var name = $("start-name").value.trim();
        if (name)
            options.name = { t: "s", v: name };
        return options;
    }

    /* A command line split as a shell splits words: quotes and backslashes, nothing else. */
    function splitWords(line) {
        var words = [];
        var word = null;
        var quote = null;
        for (var i = 0; i < line.length; i++) {
            var c = line[i];
            if (quote) {
                if (c === quote)
                    quote = null;
                else if (c === "\\" && quote === '"' && i + 1 < line.length && '"\\$`'.indexOf(line[i + 1]) >= 0)
                    word += line[++i];
                else
                    word += c;
            } else if (c === "'" || c === '"') {
                quote = c;
                word = word || "";
            } else if (c === "\\" && i + 1 < line.length) {
                word = (word || "") + line[++i];
            } else if (/\s/.test(c)) {
                if (word !== null)
                    words.push(word);
                word = null;
            } else {
                word = (word || "") + c;
            }
        }
        if (quote)
            throw new Error("the command has an unterminated " + quote + " quote");
        if (word !== null)
            words.push(word);
        return words;
    }

    /* jobrund's messages name the CLI flag ("--memory-max: ..."): mark that field too. */
    function markFields(message) {
        settings.forEach(function (s) {
            var row = document.querySelector('[data-field="' + s.field + '"]');
            var hit = message && message.indexOf(s.flag) >= 0;
            row.classList.toggle("has-error", !!hit);
        });
    }

    function startJob(ev) {
        ev.preventDefault();
        show($("start-error"), "");
        $("start-ok").textContent = "";
        markFields(null);
        var command;
        try {
            command = splitWords($("start-command").value);
        } catch (ex) {
            show($("start-error"), ex.message);
            return;
        }
        if (!command.length) {
            show($("start-error"), "give a command to run");
            return;
        }
        $("start-button").disabled = true;
        call("Start", [command, formOptions()])
                .then(function (reply) {
                    var job = JSON.parse(reply[0]);
                    $("start-ok").textContent = "started " + job.id;
                    select(job.id);
                    refresh();
                })
                .catch(function (ex) {
                    show($("start-error"), errorText(ex));
                    markFields(errorText(ex));
                })
                .finally(function () { $("start-button").disabled = false });
    }

    /* -- the list ------------------------------------------------------------------------- */

    function cell(tr, text, cls) {
        var td = document.createElement("td");
        td.textContent = text === null || text === undefined ? "" : String(text);
        if (cls)
            td.className = cls;
        tr.appendChild(td);
    }

    function renderList() {
        var body = $("jobs-body");
        body.textContent = "";
        jobs.forEach(function (job) {
            var tr = document.createElement("tr");
            tr.dataset.id = job.id;
            if (job.id === selected)
                tr.className = "selected";
            cell(tr, job.id, "id");
            cell(tr, job.name);
            cell(tr, job.state, "state");
            cell(tr, job.owner);
            cell(tr, (job.command || []).join(" "), "command");
            cell(tr, job.started_at || job.created_at);
            tr.addEventListener("click", function () { select(job.id) });
            body.appendChild(tr);
        });
        $("no-jobs").hidden = jobs.length > 0;
    }

    function refresh() {
        return call("List", [me.admin])
                .then(function (reply) {
                    jobs = JSON.parse(reply[0]);
                    show($("page-error"), "");
                    renderList();
                })
                .catch(function (ex) { show($("page-error"), "Listing jobs failed: " + errorText(ex)) })
                .then(function () {
                    if (selected)
                        return refreshDetail();
                });
    }

    /* -- one job -------------------------------------------------------------------------- */

    function fill(dl, entries) {
        dl.textContent = "";
        entries.forEach(function (e) {
            if (e[1] === null || e[1] === undefined || e[1] === "")
                return;
            var dt = document.createElement("dt");
            dt.textContent = e[0];
            var dd = document.createElement("dd");
            dd.textContent = typeof e[1] === "object" ? JSON.stringify(e[1]) : String(e[1]);
            dd.dataset.key = e[0];
            dl.appendChild(dt);
            dl.appendChild(dd);
        });
    }

    function bytes(n) {
        if (n === null || n === undefined)
            return null;
        var units = ["B", "KiB", "MiB", "GiB", "TiB"];
        var i = 0;
        while (n >= 1024 && i < units.length - 1) {
            n /= 1024;
            i++;
        }
        return (i ? n.toFixed(1) : n) + " " + units[i];
    }

    function renderDetail(job) {
        $("detail").hidden = false;
        $("detail-id").textContent = job.id;
        $("detail").dataset.state = job.state;
        fill($("detail-status"), [
            ["state", job.state], ["name", job.name], ["owner", job.owner],
            ["command", (job.command || []).join(" ")], ["unit", job.unit],
            ["created", job.created_at], ["started", job.started_at], ["finished", job.finished_at],
            ["exit code", job.exit_code], ["signal", job.signal], ["result", job.result],
            ["reason", job.reason],
        ]);
        var limits = job.limits || {};
        fill($("detail-limits"), Object.keys(limits).map(function (k) { return [k, limits[k]] }));
        var u = job.usage;
        fill($("detail-usage"), u
            ? [["cpu", u.cpu_seconds === null ? null : u.cpu_seconds.toFixed(2) + " s"],
                ["memory", bytes(u.memory_bytes)], ["tasks", u.tasks],
                ["io read", bytes(u.io_read_bytes)], ["io written", bytes(u.io_write_bytes)]]
            : [["", "none (not running)"]]);
        $("stop-button").disabled = job.state !== "running" && job.state !== "starting";
    }

    function refreshDetail() {
        var id = selected;
        return call("Status", [id])
                .then(function (reply) {
                    if (id === selected)
                        renderDetail(JSON.parse(reply[0]));
                })
                .catch(function (ex) {
                    if (id === selected)
                        show($("stop-error"), errorText(ex));
                });
    }

    function follow(id) {
        if (follower)
            follower.close("terminated");
        var out = $("output");
        out.textContent = "";
        $("output-state").textContent = "(following)";
        var proc = cockpit.spawn(["jobrun", "logs", "--follow", "--", id], { err: "message" });
        follower = proc;
        proc.stream(function (data) {
            if (follower !== proc)
                return;
            var atEnd = out.scrollTop + out.clientHeight >= out.scrollHeight - 4;
            out.appendChild(document.createTextNode(data));
            if (atEnd)
                out.scrollTop = out.scrollHeight;
        });
        proc.then(function () {
            if (follower === proc)
                $("output-state").textContent = "(ended)";
        }).catch(function (ex) {
            if (follower === proc && ex.problem !== "terminated")
                $("output-state").textContent = "(" + errorText(ex) + ")";
        });
    }

    function select(id) {
        if (selected === id)
            return;
        selected = id;
        show($("stop-error"), "");
        renderList();
        follow(id);
        refreshDetail();
    }

    function stopJob() {
        show($("stop-error"), "");
        $("stop-button").disabled = true;
        call("Stop", [selected, -1.0])
                .then(refresh)
                .catch(function (ex) {
                    show($("stop-error"), errorText(ex));
                    $("stop-button").disabled = false;
                });
    }

    /* -- start ---------------------------------------------------------------------------- */

    function poll() {
        refresh().then(function () { window.setTimeout(poll, POLL_MS) });
    }

    function init() {
        client = cockpit.dbus(BUS_NAME, { bus: "system" });
        $("start-form").addEventListener("submit", startJob);
        $("stop-button").addEventListener("click", stopJob);
        var gotSettings = fetch("settings.json", { credentials: "same-origin" })
                .then(function (r) {
                    if (!r.ok)
                        throw new Error("settings.json: " + r.status);
                    return r.json();
                })
                .then(function (table) {
                    settings = table;
                    var box = $("settings");
                    settings.forEach(function (s) { box.appendChild(settingRow(s)) });
                });
        var gotUser = call("Whoami", []).then(function (reply) {
            me.user = reply[0];
            me.admin = reply[1];
            $("whoami").textContent = "As " + me.user + (me.admin ? " (manages every job)" : "");
            $("scope").textContent = me.admin ? "(everyone's)" : "(yours)";
        });
        Promise.all([gotSettings, gotUser])
                .then(function () {
                    document.body.dataset.ready = "true";
                    poll();
                })
                .catch(function (ex) { show($("page-error"), "jobrund: " + errorText(ex)) });
    }

    document.addEventListener("DOMContentLoaded", init);
}());
