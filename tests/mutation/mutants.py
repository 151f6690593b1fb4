"""The curated mutants: one deliberate bug in each safety-critical line, and the tests that
must catch it.

Each original snippet must occur exactly once in its file (checked by
tests/unit/test_mutants_list.py), so an edit of the product that moves or rewrites a guarded
line fails that fast test instead of leaving a mutant that silently no longer applies.
`tests` are pytest node ids (or `-k` expressions, written as "-k EXPR"), the fastest tests
that should fail when the mutant is in place.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Mutant:
    id: str
    file: str
    original: str
    replacement: str
    tests: list[str] = field(default_factory=list)
    why: str = ""


G = "tests/integration/test_guards.py"
COD = "tests/unit/test_codecs.py"
N = "tests/integration/test_node.py"
H = "tests/integration/test_hardening.py"
ISO = "tests/integration/test_isolation.py"
CK = "tests/integration/test_checkpoints.py"
LEASE_UNIT = "tests/unit/test_lease.py"
PL = "tests/integration/test_plans.py"
DB = "tests/integration/test_debounce.py"
AS = "tests/integration/test_async_handlers.py"
DM = "tests/integration/test_doc_memo.py"
MR = "tests/integration/test_member_reads.py"

MUTANTS: list[Mutant] = [
    # -- owner znodes: creation and release ------------------------------------------------
    Mutant(
        "owner-persistent", "xconsumer/slot.py",
        "path, self.owner_data(), ephemeral=True, include_data=True",
        "path, self.owner_data(), ephemeral=False, include_data=True",
        [f"{N}::test_session_expiry_stops_slots_and_the_node_rejoins",
         "tests/integration/test_claims.py::test_a_held_slot_is_left_out_of_the_claim_and_"
         "waits_for_its_owner"],
        "a persistent owner znode outlives a dead node's session: the slot never moves"),
    Mutant(
        "owner-exists-taken-as-ours", "xconsumer/slot.py",
        "            except NodeExistsError:\n                pass\n",
        "            except NodeExistsError:\n                return True\n",
        [f"{N}::test_stuck_handler_keeps_its_owner_znode_until_it_really_ends"],
        "a slot starts while another node's owner znode exists: it runs twice"),
    Mutant(
        "owner-create-makepath", "xconsumer/slot.py",
        "path, self.owner_data(), ephemeral=True, include_data=True",
        "path, self.owner_data(), ephemeral=True, makepath=True, include_data=True",
        [f"{H}::test_a_slot_still_claiming_when_zookeeper_went_away_stops_at_once"],
        "kazoo's makepath sends a claim's create again after a stop: it can land after the "
        "orphan sweep looked, and the slot stays held by a session that does not run it"),
    Mutant(
        "owner-parent-not-made", "xconsumer/slot.py",
        "                parent_made = self._make_parent()\n",
        "                parent_made = True\n",
        ["tests/integration/test_claims.py::test_a_lone_slot_of_a_new_task_makes_the_parent_"
         "from_its_thread"],
        "a lone slot of a new task never gets its owner znode: no owners/<task> to make it in"),
    Mutant(
        "owner-parent-refusal-silent", "xconsumer/slot.py",
        "            self._report_blocked(self._paths.owners)\n",
        "            pass\n",
        ["tests/integration/test_claims.py::test_a_lone_slot_under_an_ephemeral_owners_"
         "znode_is_reported_blocked"],
        "a slot whose owners/ was made ephemeral by hand waits for ever without a word"),
    Mutant(
        "claim-lost-answer-forgets-ending-runners", "xconsumer/runtime.py",
        "                        runner.may_hold_owner = True\n",
        "                        pass\n",
        ["tests/integration/test_claims.py::test_a_claim_whose_answer_was_lost_leaves_no_"
         "znode_to_runners_stopping_at_their_gate"],
        "a claim whose answer was lost leaves the znodes of runners still ending for the "
        "session's life: their slots are blocked for every other node"),
    Mutant(
        "release-deletes-anyones-owner", "xconsumer/slot.py",
        "self.fence is None and stat.ephemeralOwner == self._session_id()))",
        "self.fence is None))",
        [f"{G}::test_a_runner_that_never_got_its_slot_leaves_the_owners_znode_alone"],
        "a runner that never got the slot deletes the owner znode of the node running it"),
    Mutant(
        "orphans-delete-foreign", "xconsumer/runtime.py",
        "if (stat is not None and session is not None and stat.ephemeralOwner == session\n",
        "if (stat is not None\n",
        [f"{G}::test_orphaned_owner_znodes_are_deleted_only_when_our_session_holds_them"],
        "an orphan retry deletes the next owner's znode after our session expired"),
    Mutant(
        "orphans-never-deleted", "xconsumer/runtime.py",
        "                    self._client.delete_async(path, version=stat.version)"
        ".get(timeout=5.0)\n",
        "                    pass\n",
        [f"{G}::test_orphaned_owner_znodes_are_deleted_only_when_our_session_holds_them"],
        "an owner znode left while disconnected stays for the session's life: the slot "
        "is stuck"),
    Mutant(
        "look-after-a-lost-create-without-sync", "xconsumer/zk.py",
        "    return client.exists_async(path) if fence is not None else exists_after_sync("
        "client, path)\n",
        "    return client.exists_async(path)\n",
        ["tests/integration/test_slot_runner.py::test_a_look_that_may_follow_a_lost_create_"
         "goes_behind_a_sync"],
        "after a lost create's answer, a server of the ensemble that has not applied it yet "
        "says no node: the runner (or the orphan sweep) forgets a znode that appears later, "
        "held for the session's life"),
    Mutant(
        "look-after-sync-ignores-a-failed-sync", "xconsumer/zk.py",
        "        self._synced.get(timeout=max(0.0, deadline - time.monotonic()))\n",
        "        pass\n",
        ["tests/integration/test_slot_runner.py::test_a_look_whose_syn"
         "c_failed_counts_for_nothing"],
        "a connection dropped between the sync and the exists: the exists goes alone to a "
        "server that may lag, and its no node lets a znode that appears later be forgotten"),
    # -- revoke before assign ---------------------------------------------------------------
    Mutant(
        "apply-no-revoke", "xconsumer/runtime.py",
        '                elif spec is None:\n                    runner.request_stop("revoked")\n',
        "                elif spec is None:\n                    pass\n",
        [f"{G}::test_a_runner_that_never_got_its_slot_leaves_the_owners_znode_alone"],
        "a slot taken from a node keeps running there"),
    Mutant(
        "apply-assign-while-stopping", "xconsumer/runtime.py",
        "                if slot in self._runners:\n                    continue",
        "                if slot in self._runners and not self._runners[slot]"
        ".stop_event.is_set():\n                    continue",
        [f"{G}::test_a_reassigned_slot_restarts_only_after_its_old_run_ended"],
        "a slot given back while its old run still ends starts a second run beside it"),
    Mutant(
        "claim-persistent", "xconsumer/runtime.py",
        "tx.create(runner.owner_path, runner.owner_data(), ephemeral=True)",
        "tx.create(runner.owner_path, runner.owner_data(), ephemeral=False)",
        [f"{N}::test_session_expiry_stops_slots_and_the_node_rejoins",
         "tests/integration/test_claims.py::test_free_slots_are_claimed_in_one_transaction"],
        "a batched claim makes owner znodes that outlive a dead node's session"),
    Mutant(
        "claimed-never-started", "xconsumer/runtime.py",
        "                    runner.exited = True\n",
        "                    pass\n",
        ["tests/integration/test_claims.py::test_a_runner_that_never_starts_gives_its_znode_"
         "back"],
        "a slot whose thread cannot start keeps the owner znode the batched claim made for "
        "it as long as our session: no node can run it"),
    Mutant(
        "claimed-after-exit-kept", "xconsumer/runtime.py",
        "                runner.claimed(stat.czxid)\n                if runner.exited:\n",
        "                runner.claimed(stat.czxid)\n                if False:\n",
        ["tests/integration/test_claims.py::test_a_runner_stopped_while_its_claim_is_out_"
         "leaves_its_znode_to_the_sweep"],
        "a slot thread that ended before the batched claim landed (a missing handler) keeps "
        "the owner znode made for it as long as our session: the slot is blocked elsewhere"),
    Mutant(
        "orphan-sweep-deletes-a-held-key", "xconsumer/runtime.py",
        "                if any(r.alive and r.owner_path == path for r in "
        "self._runners.values()):\n",
        "                if False:\n",
        ["tests/integration/test_claims.py::test_the_orphan_sweep_spares_a_keyed_znode_another_"
         "runner_holds"],
        "the orphan sweep deletes the znode a keyed slot's runner under another index holds"),
    Mutant(
        "orphan-sweep-spares-an-old-key", "xconsumer/runtime.py",
        "                if any(r.alive and r.owner_path == path for r in "
        "self._runners.values()):\n",
        "                if any(r.alive and (r.owner_path == path or r.slot.task == "
        "path.rsplit('/', 2)[-2]) for r in self._runners.values()):\n",
        ["tests/integration/test_claims.py::test_the_orphan_sweep_deletes_the_old_keys_znode_"
         "of_a_slot_whose_key_changed"],
        "the sweep takes any live runner of the slot's task for the znode's owner: the old "
        "key's znode of a slot whose key changed stays for the session's life"),
    Mutant(
        "orphan-sweep-drops-a-record-made-meanwhile", "xconsumer/runtime.py",
        "                if self._orphans.get(path, fence) == fence:\n",
        "                if True:\n",
        [f"{G}::test_an_orphan_recorded_again_while_the_sweep_looks_is_swept_next_time"],
        "a znode a runner recorded while the sweep looked at an older one of that path is "
        "forgotten: it stays for the session's life"),
    # -- the leader's publish -------------------------------------------------------------
    Mutant(
        "publish-no-member-check", "xconsumer/plans.py",
        "            tx.check(member_path, -1)\n",
        "",
        [f"{G}::test_a_deposed_leader_whose_session_lives_cannot_publish",
         f"{N}::test_publish_is_fenced_on_the_leaders_member_znode"],
        "a deposed leader overwrites its successor's assignment"),
    Mutant(
        "publish-any-version", "xconsumer/leader.py",
        "tx.set_data(paths.assignment, data, version=version)",
        "tx.set_data(paths.assignment, data, version=-1)",
        [f"{G}::test_a_publish_based_on_a_stale_read_is_refused"],
        "two writers interleave: a plan computed from a stale read overwrites a newer one"),
    Mutant(
        "repair-generation-from-1", "xconsumer/leader.py",
        "max(generation, version + 1, seen) + 1",
        "generation + 1",
        [f"{H}::test_a_corrupt_assignment_is_repaired_above_every_generation_without_restarts"
         "[not json]"],
        "a repaired assignment goes back to generation 1, below what nodes already saw"),
    Mutant(
        "slot-cap-ignored", "xconsumer/leader.py",
        "        keep = min(task.worker_num, room)\n",
        "        keep = task.worker_num\n",
        [f"{H}::test_the_total_slot_count_is_capped_everywhere"],
        "a table over [assignment] max_slots is scheduled in full"),
    # -- the lease and ctx.stopping -------------------------------------------------------
    Mutant(
        "lease-always-valid", "xconsumer/lease.py",
        "        return self.remaining() > 0\n",
        "        return True\n",
        [LEASE_UNIT,
         f"{G}::test_handlers_stop_on_the_lease_alone_when_no_thread_of_the_node_runs"],
        "a frozen node's handlers run on after its session expired"),
    Mutant(
        "lease-whole-session", "xconsumer/lease.py",
        "deadline = sent_at + self._session_timeout() * self._fraction",
        "deadline = sent_at + self._session_timeout()",
        [LEASE_UNIT],
        "the lease lasts as long as the session: no time is left to stop before expiry"),
    Mutant(
        "lease-invalidate-noop", "xconsumer/lease.py",
        '            self._deadline = float("-inf")\n\n    def remaining',
        "            pass\n\n    def remaining",
        [LEASE_UNIT],
        "a lost session or membership leaves the lease valid"),
    Mutant(
        "stopping-ignores-lease", "xconsumer/slot.py",
        "if not self.stop_event.is_set() and not self._lease.valid():",
        "if not self.stop_event.is_set() and False:",
        [LEASE_UNIT,
         f"{G}::test_handlers_stop_on_the_lease_alone_when_no_thread_of_the_node_runs"],
        "ctx.stopping stays false on an ended lease: only the (maybe frozen) lease thread "
        "stops handlers"),
    Mutant(
        "lease-loop-any-owner", "xconsumer/node.py",
        "if stat is not None and stat.ephemeralOwner == session:",
        "if stat is not None:",
        [f"{G}::test_the_lease_is_renewed_only_by_our_own_member_znode"],
        "a member znode another session created at our path renews our lease"),
    Mutant(
        "lease-renewed-at-reply", "xconsumer/node.py",
        "            self.lease.renew(sent)\n",
        "            self.lease.renew(self.lease.now())\n",
        [f"{G}::test_the_lease_counts_from_when_the_renewing_request_was_sent"],
        "a slow reply stretches the lease past the session's possible expiry"),
    # -- session loss -----------------------------------------------------------------------
    Mutant(
        "lost-no-revoke", "xconsumer/node.py",
        '            self.runtime.revoke_all("ZooKeeper session lost")\n',
        "",
        [f"{G}::test_a_lost_session_stops_every_slot_and_ends_the_lease_at_once"],
        "slots are not stopped when kazoo reports the session expired"),
    Mutant(
        "lost-no-invalidate", "xconsumer/node.py",
        "        if state == KazooState.LOST:\n            self.lease.invalidate()\n",
        "        if state == KazooState.LOST:\n",
        [f"{G}::test_a_lost_session_stops_every_slot_and_ends_the_lease_at_once"],
        "the lease stays valid after the session is gone"),
    Mutant(
        "lease-renewed-without-sync", "xconsumer/node.py",
        "        stat = exists_after_sync(self.client, path).get(timeout=timeout)\n",
        "        stat = self.client.exists_async(path).get(timeout=timeout)\n",
        [f"{G}::test_a_renewal_goes_behind_a_sync_and_counts_only_once_the_sync_"
         "went_through"],
        "a server cut off from the quorum answers the lease's look while our session "
        "expires: the lease is renewed past the session's end"),
    Mutant(
        "lease-ended-no-revoke", "xconsumer/node.py",
        '            self.runtime.revoke_all("lease ended")\n',
        "",
        [f"{G}::test_the_lease_thread_revokes_every_slot_when_the_lease_ends"],
        "a handler waiting on ctx.stop_event runs on after the lease ended"),
    # -- corrupt assignment -------------------------------------------------------------------
    Mutant(
        "corrupt-assignment-applied-as-empty", "xconsumer/node.py",
        "        if isinstance(published, Corrupt):\n            return False\n",
        "        if isinstance(published, Corrupt):\n            published = None\n",
        [f"{G}::test_a_follower_runs_its_last_valid_plan_pass_after_pass_while_the_"
         "assignment_is_corrupt"],
        "a follower stops every slot when the assignment is unreadable"),
    # -- stuck handlers and process isolation ---------------------------------------------
    Mutant(
        "stuck-stop-closes-session", "xconsumer/node.py",
        "            self.runtime.keep_session()\n",
        "            self.runtime.keep_session()\n            stop_client(self.client)\n",
        [f"{G}::test_a_node_stopping_with_a_stuck_slot_keeps_its_session_and_owner_znode"],
        "a node stopping with a stuck slot closes its session: the owner znode goes while "
        "the handler still runs"),
    Mutant(
        "name-kept-when-the-session-is-kept", "xconsumer/runtime.py",
        "        if give_back is not None:\n            give_back()\n",
        "        pass\n",
        [f"{G}::test_a_node_stopping_with_a_stuck_slot_keeps_its_session_and_owner_znode"],
        "a leaving node's name claim is left to its session's close, which a stuck slot "
        "puts off: a restart under its name cannot join until the process ends"),
    Mutant(
        "slot-thread-ends-before-its-slot", "xconsumer/slotthreads.py",
        "        try:\n            contextvars.Context().run(self._target)\n",
        "        self._done.set()\n        try:\n            contextvars.Context().run("
        "self._target)\n",
        [f"{G}::test_a_node_stopping_with_a_stuck_slot_keeps_its_session_and_owner_znode",
         "tests/unit/test_slotthreads.py::test_a_slot_thread_is_alive_until_its_slot_ends_"
         "and_named_after_it"],
        "a pooled thread reports its slot ended while the handler still runs: a leaving "
        "node closes its session, and the slot's next owner starts it beside the handler"),
    Mutant(
        "new-thread-idle-before-its-first-slot", "xconsumer/slotthreads.py",
        "            if worker.job is not None:\n                job, worker.job = worker.job, "
        "None\n                return job\n            if self._closed:\n",
        "            if self._closed:\n",
        ["tests/unit/test_slotthreads.py::test_a_slot_thread_is_alive_until_its_slot_ends_"
         "and_named_after_it"],
        "a new thread lists itself idle before it takes its first slot: the slot waits for "
        "the idle timeout (30 s) before it starts"),
    Mutant(
        "prestart-into-a-forming-cluster", "xconsumer/node.py",
        "        if stat is None or published is None or published.mzxid <= stat.pzxid:\n",
        "        if stat is None:\n",
        ["tests/integration/test_claims.py::test_a_node_joining_a_formed_cluster_runs_its_"
         "share_on_threads_started_before_it_joined"],
        "nodes starting together each start a share guessed from the members there so far: "
        "thousands of idle threads at 1,000 members, whose processes lose their sessions"),
    Mutant(
        "prestart-onto-an-old-assignment", "xconsumer/node.py",
        "        if stat is None or published is None or published.mzxid <= stat.pzxid:\n",
        "        if stat is None or published is None:\n",
        ["tests/integration/test_claims.py::test_a_cluster_restarted_as_a_whole_onto_its_old_"
         "assignment_prestarts_nothing"],
        "a cluster restarted as a whole onto its old assignment: each member starting "
        "guesses a share from the members there so far, as in a forming cluster"),
    Mutant(
        "prestart-budget-not-spent", "xconsumer/slotthreads.py",
        "min(want, self._limit - sum(n for _, n in self._spent))",
        "min(want, self._limit)",
        ["tests/integration/test_claims.py::test_the_prestart_is_capped_by_max_per_node_and_"
         "by_the_process_budget"],
        "every node of a process starts up to 64 threads ahead of its join: a process "
        "running hundreds of members starts thousands in a burst of joins"),
    Mutant(
        "prestart-budget-never-refills", "xconsumer/slotthreads.py",
        "            while self._spent and now - self._spent[0][0] >= self._window:\n",
        "            while False:\n",
        ["tests/unit/test_slotthreads.py::test_the_prestart_budget_is_spent_again_once_the_"
         "window_has_passed"],
        "a process starts threads ahead of its first joins only, never again"),
    Mutant(
        "prestarted-thread-listed-before-it-runs", "xconsumer/slotthreads.py",
        "                worker = _Worker(self, None)\n                self._workers.add(worker)\n",
        "                worker = _Worker(self, None)\n                self._workers.add(worker)\n"
        "                self._idle.append(worker)\n",
        ["tests/unit/test_slotthreads.py::test_a_prestarted_thread_is_handed_no_slot_before_"
         "it_runs"],
        "a slot handed to a prestarted thread before it started has no thread if the start "
        "then fails"),
    Mutant(
        "prestart-ignores-max-per-node", "xconsumer/node.py",
        "            share += mine if task.max_per_node is None else min(mine, "
        "task.max_per_node)\n",
        "            share += mine\n",
        ["tests/integration/test_claims.py::test_the_prestart_is_capped_by_max_per_node_and_"
         "by_the_process_budget"],
        "a node starts threads for slots that max_per_node keeps from it"),
    Mutant(
        "isolation-no-wait-for-session", "xconsumer/isolation.py",
        "    _wait_session_gone(runner, proc.pid, watcher.value)\n",
        "",
        [f"{ISO}::test_a_slot_whose_processes_cannot_be_confirmed_gone_stays_owned_and_stuck"],
        "the owner znode is released while processes of the handler's session still run"),
    Mutant(
        "isolation-signal-child-only", "xconsumer/isolation.py",
        "    if _leads_session(proc.pid):\n        signal_session(proc.pid, signum)\n",
        "    if _leads_session(proc.pid):\n        os.kill(proc.pid, signum)\n",
        [f"{G}::test_sigterm_reaches_every_process_of_an_isolated_handler"],
        "SIGTERM reaches only the child: programs the handler started are SIGKILLed "
        "later without a chance to clean up"),
    # -- container tasks ------------------------------------------------------------------------
    Mutant(
        "container-released-before-removed", "xconsumer/executors/container.py",
        "            client.api.remove_container(container_id, force=True)\n"
        "        except docker.errors.NotFound:\n",
        "            return  # the owner znode goes while the container may still run\n"
        "        except docker.errors.NotFound:\n",
        ["tests/docker/test_container_tasks.py::"
         "test_a_container_slot_runs_is_revoked_and_handed_over_without_overlap"],
        "a revoked container still runs when the owner znode is released: the next owner's "
        "container runs beside it"),
    # -- checkpoints: the commit fence ----------------------------------------------------------
    Mutant(
        "commit-without-member-check", "xconsumer/checkpoint.py",
        "            tx.check(self._member, -1)\n",
        "            pass\n",
        [f"{CK}::test_a_commit_after_the_member_znode_is_gone_is_refused"],
        "a node whose session expired (frozen, then woken) still commits over its successor"),
    Mutant(
        "commit-any-checkpoint-version", "xconsumer/checkpoint.py",
        "            tx.set_data(self.path, raw, version=self._version)\n",
        "            tx.set_data(self.path, raw, version=-1)\n",
        [f"{CK}::test_a_deposed_owner_cannot_commit_over_its_successor",
         f"{CK}::test_a_reset_refuses_the_running_owners_next_commit"],
        "a deposed owner's commit overwrites what its successor committed"),
    Mutant(
        "checkpoint-read-without-bump", "xconsumer/checkpoint.py",
        "                stat = self._call(self._client.set_async(self.path, bumped,\n"
        "                                                         version=stat.version))\n",
        "                pass\n",
        [f"{CK}::test_a_deposed_owner_cannot_commit_over_its_successor"],
        "a new owner reads the checkpoint without making earlier owners' versions stale"),
    Mutant(
        "corrupt-checkpoint-read-as-none", "xconsumer/checkpoint.py",
        "            if isinstance(doc, Corrupt):\n                raise CheckpointError(",
        "            if isinstance(doc, Corrupt):\n                doc = {'value': None}\n"
        "            if False:\n                raise CheckpointError(",
        [f"{CK}::test_a_corrupt_checkpoint_is_never_read_as_none"],
        "a hand-edited checkpoint restarts the slot's work from the beginning"),
    Mutant(
        "lost-reply-taken-as-landed", "xconsumer/checkpoint.py",
        "            if stat.version == self._version + 1 and data == raw:\n",
        "            if stat.version > self._version:\n",
        [f"{CK}::test_a_lost_reply_is_resolved_by_reading_back"],
        "a commit whose reply was lost is reported landed although another owner wrote"),
    Mutant(
        "checkpoint-late-reader-bumps", "xconsumer/checkpoint.py",
        "            if int(doc.get(\"fence\", 0)) > self._fence:\n",
        "            if False:\n",
        [f"{CK}::test_an_earlier_owner_reading_for_the_first_time_after_its_successor_is_refused"],
        "an earlier owner that first reads the checkpoint after its successor takes it over"),
    Mutant(
        "moved-key-starts-beside-its-old-runner", "xconsumer/runtime.py",
        "                    continue  # its key still runs under another index: started once "
        "it ends\n",
        "                    pass\n",
        [f"{CK}::test_a_key_that_moves_to_another_index_waits_for_its_previous_runner"],
        "a keyed slot whose key moved runs beside the runner still finishing that key"),
    # -- per-node plans -----------------------------------------------------------------
    Mutant(
        "planless-node-watches-the-document", "xconsumer/node.py",
        "                self._peek_document()\n",
        "                self._read_document()\n",
        [f"{PL}::test_a_node_without_a_plan_is_not_woken_by_every_publish"],
        "every joining node reads the whole document on every publish of a forming cluster"),
    Mutant(
        "plan-from-any-leader", "xconsumer/node.py",
        "                or not self._elected_writer(plan)):\n",
        "                ):\n",
        [f"{PL}::test_a_plan_not_written_by_the_elected_leader_is_not_applied"],
        "a follower applies a plan an earlier leader (or a hand edit) left, not the document"),
    Mutant(
        "successor-plan-while-leader-lives", "xconsumer/node.py",
        "                or self._gone_leader is None or self._gone_leader != "
        "self._leader_child\n",
        "",
        [f"{PL}::test_a_plan_naming_the_successor_is_not_taken_while_the_leader_lives",
         f"{PL}::test_the_successors_plan_is_taken_by_the_rule_and_no_other"],
        "a follower applies a plan naming the member behind its leader while the leader "
        "lives (a forged one, or one of a member that took itself for the leader)"),
    Mutant(
        "leader-gone-on-any-event", "xconsumer/node.py",
        "        if getattr(event, \"type\", None) == EventType.DELETED:\n",
        "        if True:\n",
        [f"{PL}::test_a_plan_naming_the_successor_is_not_taken_while_the_leader_lives"],
        "a change of the leader's data is taken for its end: the successor's plan is "
        "trusted while the leader lives"),
    Mutant(
        "successor-plan-never-taken", "xconsumer/node.py",
        "        if (self._successor_child is None or plan[\"leader\"] != self._successor_child\n",
        "        if (True or plan[\"leader\"] != self._successor_child\n",
        [f"{PL}::test_at_its_leaders_end_a_follower_takes_the_successors_plan_without_a_"
         "listing"],
        "every follower lists the members before it trusts the new leader's plan: the "
        "takeover waits for a full pass of each"),
    Mutant(
        "publish-fenced-by-the-member-held-now", "xconsumer/node.py",
        "            result = publish(self.client, self.paths, my_child=own,\n",
        "            result = publish(self.client, self.paths, "
        "my_child=self._member_child or \"\",\n",
        [f"{G}::test_a_leader_stopping_mid_pass_publishes_behind_its_own_member_znode"],
        "a leader stopping mid-pass publishes fenced by no member znode: its last plans "
        "overwrite its successor's"),
    Mutant(
        "empty-fence-sent", "xconsumer/plans.py",
        "    if not member_path or member_path.endswith(\"/\"):\n",
        "    if False:\n",
        [f"{G}::test_a_publish_fenced_by_no_member_znode_is_never_sent"],
        "a write whose fence names no member znode checks the members' container, which "
        "always passes"),
    Mutant(
        "successor-followed-unread-or-corrupt", "xconsumer/node.py",
        "        self._successor_child = (second.child if second is not None and second.known\n"
        "                                 and second.corrupt is None else None)\n",
        "        self._successor_child = second.child if second is not None else None\n",
        [f"{PL}::test_a_successor_whose_data_does_not_decode_is_not_followed"],
        "a follower takes the plan of a successor whose data is corrupt (one the others' "
        "elections skip) at its leader's end"),
    Mutant(
        "successor-data-never-read", "xconsumer/membership.py",
        "            elif rec.corrupt is None:\n                leader_read = True\n",
        "            elif rec.corrupt is None:\n                leader_read, front = True, False\n",
        [f"{PL}::test_at_its_leaders_end_a_follower_takes_the_successors_plan_without_a_"
         "listing",
         f"{MR}::test_a_follower_reads_only_the_leader_its_successor_and_itself"],
        "a follower never reads its successor's data, so it never takes the successor's "
        "plan at once: every takeover waits for each follower's full pass"),
    Mutant(
        "leader-end-kept-across-passes", "xconsumer/node.py",
        "        self._gone_leader = None\n        while True:\n",
        "        while True:\n",
        [f"{PL}::test_the_successors_plan_is_taken_by_the_rule_and_no_other"],
        "a leader's end seen once stays a fact: a live member given its name again (nodes/ "
        "made again) passes for gone, and the next one's plan is trusted"),
    Mutant(
        "member-cache-kept-on-rejoin", "xconsumer/node.py",
        "            self._member_cache.clear()\n",
        "",
        [f"{PL}::test_the_successors_plan_is_taken_by_the_rule_and_no_other"],
        "after nodes/ is made again, a new member is taken for the old one of its name "
        "(its name, handlers and weight)"),
    Mutant(
        "successor-plan-without-leader-name", "xconsumer/node.py",
        "                or name is None):\n",
        "                ):\n",
        [f"{PL}::test_a_successors_plan_without_the_leaders_name_waits_for_a_full_pass"],
        "an older leader's plan (no leader_name) is taken at its predecessor's end: the "
        "node shows a dead leader's name"),
    Mutant(
        "plan-leader-name-any-string", "xconsumer/codecs.py",
        "    if name is not None and not (isinstance(name, str) and _NAME_RE.fullmatch(name)):\n",
        "    if name is not None and not isinstance(name, str):\n",
        ["tests/unit/test_codecs.py::test_a_plans_leader_name_is_a_node_name_or_absent"],
        "any string in a plan's leader_name reaches logs, events and the API as the "
        "leader's name (newlines, escapes, a megabyte)"),
    Mutant(
        "stop-waits-for-ever-for-the-member-lock", "xconsumer/node.py",
        "        locked = self._member_lock.acquire(timeout=max(0.1, min(\n",
        "        locked = self._member_lock.acquire(timeout=-1 if True else max(0.1, min(\n",
        [f"{H}::test_a_stop_is_not_held_for_ever_by_a_membership_call"],
        "a membership call stuck on a connection gone for good keeps stop() from ever "
        "returning (the suite hung on it)"),
    Mutant(
        "rejoin-after-the-stop-kept", "xconsumer/node.py",
        "            if self._lock_abandoned:\n",
        "            if False:\n",
        [f"{H}::test_a_rejoin_that_ends_after_the_stop_gave_up_on_it_leaves_at_once"],
        "a rejoin that ends after stop() gave up on it stays a member while the session "
        "lives on"),
    Mutant(
        "foreign-member-znode-believed", "xconsumer/node.py",
        "        if self._member_foreign is not None and self._member_foreign == "
        "self._member_child:\n",
        "        if False:\n",
        [f"{H}::test_a_member_znode_name_taken_by_another_session_makes_the_node_join_again"],
        "a node whose member znode's name went to another session (nodes/ made again) "
        "believes it is still a member, its lease invalid for good"),
    Mutant(
        "name-claim-check-unbounded", "xconsumer/membership.py",
        "    stat = client.exists_async(claim).get(timeout=CLAIM_TIMEOUT)\n"
        "    if stat is not None and stat.ephemeralOwner:\n",
        "    stat = client.exists(claim)\n    if stat is not None and stat.ephemeralOwner:\n",
        [f"{MR}::test_the_name_claims_check_is_bounded"],
        "the name claim's check waits for ever on a connection that never answers, under "
        "the lock stop() needs"),
    Mutant(
        "plan-verify-sees-nothing", "xconsumer/plans.py",
        "            if stat is None or stat.mzxid != self.mzxids[name]:\n",
        "            if False:\n",
        [f"{PL}::test_a_plan_not_written_by_the_elected_leader_is_not_applied",
         f"{PL}::test_a_plan_made_again_by_hand_is_rewritten"],
        "a plan changed by hand is never rewritten: its node reads the whole document for ever"),
    Mutant(
        "plan-checked-by-version", "xconsumer/plans.py",
        "            if stat is None or stat.mzxid != self.mzxids[name]:\n",
        "            if stat is None or stat.version != 0 and stat.mzxid != self.mzxids[name]:\n",
        [f"{PL}::test_a_plan_made_again_by_hand_is_rewritten"],
        "a plan deleted and made again by hand passes the leader's check"),
    Mutant(
        "plan-op-vetoes-publish", "xconsumer/plans.py",
        "            if not failed or min(failed) < head:\n",
        "            if True:\n",
        [f"{PL}::test_a_plan_the_leader_may_not_write_never_stops_a_publish"],
        "one plan ZooKeeper refuses stops every publish: slots of a departed node run nowhere"),
    Mutant(
        "unreadable-plan-raises", "xconsumer/plans.py",
        "    except _UNREADABLE as exc:\n",
        "    except ZeroDivisionError as exc:\n",
        [f"{PL}::test_a_plan_its_node_may_not_read_means_the_document"],
        "a plan its node may not read stops that node's passes"),
    Mutant(
        "no-periodic-plan-check", "xconsumer/node.py",
        "        if plan_wake not in reasons and \"periodic\" in reasons and plan_mzxid(\n",
        "        if plan_wake not in reasons and \"never\" in reasons and plan_mzxid(\n",
        [f"{PL}::test_a_plan_change_whose_watch_never_came_is_seen_by_the_periodic_check"],
        "a plan change whose watch never came is not seen until the next full pass"),
    Mutant(
        "plans-all-rewritten", "xconsumer/plans.py",
        "            if same_table and known is not None and known[\"slots\"] == groups:\n"
        "                out.wanted[name] = known\n"
        "                continue\n"
        "            content = node_plan(doc, name, leader_child, tasks)\n"
        "            out.wanted[name] = content\n"
        "            if known != content:\n",
        "            content = node_plan(doc, name, leader_child, tasks)\n"
        "            out.wanted[name] = content\n"
        "            if True:\n",
        [f"{PL}::test_a_join_rewrites_and_wakes_only_the_nodes_it_concerns"],
        "every publish rewrites (and wakes) every node's plan: the herd is back"),
    Mutant(
        "document-memo-trusted-blindly", "xconsumer/leader.py",
        "        return known == mzxid, doc\n",
        "        return known is not None, doc\n",
        [f"{DM}::test_a_document_written_by_someone_else_is_read_and_repaired"],
        "the leader trusts its copy of the document whoever wrote it since: a forged or "
        "corrupt document stays published"),
    Mutant(
        "held-slot-waits-without-a-watch", "xconsumer/runtime.py",
        "        stats = [self._client.exists_async(r.owner_path, watch=r.owner_watch)\n",
        "        stats = [self._client.exists_async(r.owner_path)\n",
        ["tests/integration/test_claims.py::test_held_slots_wait_on_the_watch_the_claim_set"],
        "a slot found held in the batched claim waits without a watch: it starts only at its "
        "thread's next look, seconds after its previous owner let it go"),
    Mutant(
        "leader-lists-on-each-slot-end", "xconsumer/node.py",
        "        leader_slots = (self.is_leader and self._leading and \"slot\" in reasons\n",
        "        leader_slots = (False and self._leading and \"slot\" in reasons\n",
        ["tests/integration/test_plans.py::test_a_leader_whose_slot_ends_applies_its_share_"
         "without_a_full_pass"],
        "a leader lists the members and reads the document each time one of its slots ends: "
        "in a join that gives up five slots, five full passes in the middle of the handover"),
    Mutant(
        "leader-takes-any-document-change-for-its-own", "xconsumer/node.py",
        "        return stat is not None and stat.mzxid == self._memo.settled\n",
        "        return stat is not None\n",
        ["tests/integration/test_plans.py::test_a_leader_whose_slot_ends_applies_its_share_"
         "without_a_full_pass"],
        "a leader woken by its slots' ends and a change of the document takes the change for "
        "its own publish: a document someone else wrote is neither read nor repaired"),
    Mutant(
        "leader-light-pass-trusts-its-last-read", "xconsumer/node.py",
        "        return stat is not None and stat.mzxid == self._memo.settled\n",
        "        return stat is not None and stat.mzxid == self._memo.mzxid\n",
        ["tests/integration/test_plans.py::test_a_leader_whose_slot_ends_applies_its_share_"
         "without_a_full_pass"],
        "a leader takes the document it read last for one it checked: after a publish refused "
        "by someone else's write, or a read of the API's, that write is applied unrepaired"),
    Mutant(
        "leader-light-pass-on-any-wake-with-a-slot", "xconsumer/node.py",
        "                        and reasons <= {\"slot\", doc_wake}"
        " and self._memo.settled is not None\n",
        "                        and self._memo.settled is not None\n",
        ["tests/integration/test_plans.py::test_a_leader_whose_slot_ends_applies_its_share_"
         "without_a_full_pass"],
        "a leader whose slot ends with anything else (a join's watch, a deadline) applies its "
        "old share: the join waits for the next periodic pass"),
    Mutant(
        "leader-pass-cut-short-keeps-its-publish-settled", "xconsumer/node.py",
        "            self._memo.settled = None\n            raise\n",
        "            raise\n",
        ["tests/integration/test_plans.py::test_a_leader_pass_cut_short_after_its_publish_"
         "settled_trusts_it_no_more"],
        "a leader pass that fails between its publish and the read of its share keeps the "
        "publish as checked: a later light pass applies a share from before it"),
    Mutant(
        "leader-light-pass-skips-a-failed-publish", "xconsumer/node.py",
        "                        and self.publish_error is None and self.strategy_error is None)\n",
        "                        and self.strategy_error is None)\n",
        ["tests/integration/test_plans.py::test_a_leader_whose_slot_ends_after_a_failed_"
         "publish_publishes_again"],
        "a leader whose publish failed and whose slot then ends applies its old share "
        "without publishing again: the retry waits for the next periodic pass"),
    Mutant(
        "follow-up-claim-off", "xconsumer/runtime.py",
        "        self._claim_released(runners)\n",
        "",
        ["tests/integration/test_claims.py::test_held_slots_released_while_the_claim_is_out_"
         "are_claimed_in_one_more_transaction"],
        "held slots released while the claim was out are created one by one by their "
        "threads once the gates open: a create per slot, and a join's last slots start later"),
    Mutant(
        "follow-up-claims-slots-still-held", "xconsumer/runtime.py",
        "            gone = [r for r in runners if r.held_by is not None and r.owner_gone\n",
        "            gone = [r for r in runners if r.held_by is not None and True\n",
        ["tests/integration/test_claims.py::test_held_slots_cost_at_most_two_claiming_"
         "transactions"],
        "the follow-up claim asks for slots whose previous owner still holds them: a refused "
        "transaction of every held slot on every claim"),
    Mutant(
        "follow-up-claims-a-stopped-slot", "xconsumer/runtime.py",
        "                    and not r.stop_event.is_set() and not r.exited]\n",
        "                    and not r.exited]\n",
        ["tests/integration/test_claims.py::test_a_slot_revoked_while_its_owner_let_go_is_not_"
         "in_the_follow_up_claim"],
        "the follow-up claim makes a znode for a slot already told to stop: its new owner "
        "waits for the orphan sweep, or for a leaving node's session to close"),
    Mutant(
        "follow-up-refusal-ignored", "xconsumer/runtime.py",
        "            if any(isinstance(r, Exception) for r in committed.get("
        "timeout=CLAIM_TIMEOUT)):\n                return\n",
        "            committed.get(timeout=CLAIM_TIMEOUT)\n",
        ["tests/integration/test_claims.py::test_a_follow_up_claim_refused_leaves_the_slots_to_"
         "their_threads"],
        "a refused follow-up claim goes on to the probe: if the first slot's znode is ours by "
        "then, every slot of the transaction is taken as claimed, one held by another "
        "session included"),
    Mutant(
        "stale-housekeeping-runs-later", "xconsumer/node.py",
        "        self._chores = None  # only this pass's own, by a leader (an earlier pass may "
        "have failed)\n",
        "",
        ["tests/integration/test_leader_chores.py::test_housekeeping_left_by_a_failed_pass_"
         "never_runs_later"],
        "housekeeping left by a pass that failed runs later, on a follower, with an old task "
        "table: a newer once-task's done marker is deleted and the task runs again"),
    # -- member reads and the name claim ---------------------------------------------------
    Mutant(
        "follower-read-stops-at-a-corrupt-front", "xconsumer/membership.py",
        "            elif rec.corrupt is None:\n",
        "            else:\n",
        [f"{MR}::test_a_followers_read_agrees_with_a_full_read_on_the_election"],
        "a follower stops reading at a corrupt member ahead of the leader: once that member "
        "is taken as foreign, the follower elects one whose data it never read"),
    Mutant(
        "follower-leads-from-a-partial-read", "xconsumer/node.py",
        "            if at == 0 and not full:\n                full = True\n",
        "            if False:\n                full = True\n",
        [f"{MR}::test_a_follower_two_places_back_takes_over_with_every_members_data"],
        "a follower that becomes leader deals from the few members it read, and no watch on "
        "the member list wakes it on the next join"),
    Mutant(
        "live-twin-claim-taken", "xconsumer/membership.py",
        "        if stat.ephemeralOwner in (session, 0):\n",
        "        if True:\n",
        [f"{MR}::test_a_live_twin_is_a_one_line_error_after_the_wait"],
        "a second live process under a name deletes the first one's claim and joins: two "
        "nodes under one name"),
    Mutant(
        "lost-reply-stray-member-kept", "xconsumer/membership.py",
        "            if st is not None and st.ephemeralOwner == session:\n",
        "            if False:\n",
        [f"{MR}::test_an_earlier_attempt_whose_reply_was_lost_is_replaced"],
        "a join retried after a lost reply leaves the first attempt's member znode: the node "
        "is in the election twice"),
    Mutant(
        "plan-of-another-leader-kept-for-ever", "xconsumer/node.py",
        "        return self._stale_doc == now\n",
        "        return True\n",
        [f"{PL}::test_a_plan_not_written_by_the_elected_leader_is_not_applied"],
        "a follower whose plan names another leader never reads the document again: under "
        "a leader that writes no plans (an older xconsumer) it never gets a new assignment"),
    Mutant(
        "corrupt-member-timed-from-first-read", "xconsumer/node.py",
        "since = self._corrupt_since.setdefault(rec.child, now - self._age(rec.mtime))",
        "since = self._corrupt_since.setdefault(rec.child, now)",
        [f"{MR}::test_a_corrupt_member_is_timed_from_its_write_not_from_a_followers_first_"
         "read"],
        "a foreign member behind the leader is timed from when a follower first reads it: "
        "at the leader's leave the cluster has no working leader for two session timeouts"),
    Mutant(
        "stuck-leave-still-leaves-owners-to-the-close", "xconsumer/runtime.py",
        "        self._closing.clear()\n",
        "        pass\n",
        [f"{G}::test_a_node_stopping_with_a_stuck_slot_keeps_its_session_and_owner_znode"],
        "a node that keeps its session because a slot is stuck still leaves its other "
        "slots' owner znodes to a close that never comes: they stay taken"),
    Mutant(
        "name-claim-not-made-again", "xconsumer/membership.py",
        "        client.create_async(claim, dumps(data), ephemeral=True, makepath=True).get(\n"
        "            timeout=CLAIM_TIMEOUT)\n",
        "        pass\n",
        [f"{MR}::test_a_claim_deleted_by_hand_is_made_again_and_given_back_at_the_leave"],
        "a claim deleted by hand is never made again: a second process under the name "
        "joins"),
    Mutant(
        "slow-slot-keeps-a-leaving-nodes-fast-slots-taken", "xconsumer/runtime.py",
        "            if any(r.alive for r in runners):\n                self.keep_session()\n",
        "            pass\n",
        [f"{G}::test_a_slow_slot_of_a_leaving_node_does_not_keep_its_fast_slots_taken"],
        "a leaving node leaves every owner znode to its session's close, which waits for its "
        "slowest slot: the others stay taken for its whole stop_timeout"),
    Mutant(
        "leader-end-wakes-every-follower-at-once", "xconsumer/node.py",
        "        self._on_watch_later(event)\n",
        "        self._on_watch(event)\n",
        [f"{PL}::test_at_its_leaders_end_a_follower_takes_the_successors_plan_without_a_"
         "listing"],
        "every follower lists the members at its leader's end, with the takeover: a herd "
        "of 998 listings at 1,000 members, and a slower takeover"),
    Mutant(
        "predecessor-end-wakes-every-follower-at-once", "xconsumer/node.py",
        "watch=self._on_watch if pos <= 2 else self._on_watch_later)\n",
        "watch=self._on_watch)\n",
        [f"{PL}::test_a_predecessors_end_wakes_at_once_only_the_next_two_in_line"],
        "a follower far back runs a full pass the moment its predecessor goes, in the "
        "middle of the handover that leave or crash starts"),
    Mutant(
        "new-next-in-line-hears-its-predecessors-end-later", "xconsumer/node.py",
        "watch=self._on_watch if pos <= 2 else self._on_watch_later)\n",
        "watch=self._on_watch if pos <= 1 else self._on_watch_later)\n",
        [f"{PL}::test_a_predecessors_end_wakes_at_once_only_the_next_two_in_line"],
        "the node after the next in line learns only a second later that it is next in "
        "line: a takeover meanwhile waits for that look"),
    Mutant(
        "leader-document-watch-answer-ignored", "xconsumer/node.py",
        "        if stat is None or stat.mzxid != mzxid:\n            self._on_doc_watch(None)\n",
        "        if False:\n            self._on_doc_watch(None)\n",
        [f"{DM}::test_a_change_that_came_before_the_leaders_document_watch_is_read"],
        "a hand edit of the document made between the leader's write and its watch is "
        "never read: the leader runs a document that is no longer published"),
    Mutant(
        "overrides-made-between-get-and-exists-taken-for-none", "xconsumer/overrides.py",
        "                if made is None or attempt:\n",
        "                if True:\n",
        ["tests/integration/test_overrides_read.py::test_overrides_made_between_the_get_and_"
         "the_exists_are_read"],
        "overrides made between the read's get and its exists are taken for none, and the "
        "watch the exists set never fires for them: the leader deals without them"),
    Mutant(
        "new-next-in-line-reads-members-later", "xconsumer/node.py",
        "            elif at == 1 and not (full or in_line):\n                in_line = True\n",
        "            elif False:\n                in_line = True\n",
        [f"{MR}::test_a_node_that_becomes_next_in_line_reads_every_members_data_at_once"],
        "a node that becomes next in line reads the members' data only at a later pass, "
        "and hears of no join meanwhile: a takeover then reads them first"),
    Mutant(
        "deleted-document-kept-remembered", "xconsumer/leader.py",
        "            memo.forget()  # deleted (by hand): nothing remembered stands for it\n",
        "            pass\n",
        [f"{DM}::test_a_deleted_document_is_written_again_at_once"],
        "a document deleted by hand is never written again: the leader takes what it "
        "remembers for it, finds nothing to publish, and runs pass after pass"),
    Mutant(
        "gated-thread-ignores-stop", "xconsumer/slot.py",
        "        self._gate.set()  # a thread still at its gate ends without acquiring\n",
        "        pass\n",
        ["tests/integration/test_claims.py::test_a_stop_during_a_slow_claim_ends_the_"
         "threads_at_their_gate"],
        "a node stopping while a slow claim is out waits for it past its deadline: its "
        "slots are reported stuck and it keeps its session"),
    Mutant(
        "claim-waits-out-a-stop", "xconsumer/slot.py",
        "            if self.stop_event.is_set():\n                raise _GivenUp(",
        "            if False:\n                raise _GivenUp(",
        [f"{H}::test_a_slot_still_claiming_when_zookeeper_went_away_stops_at_once"],
        "a slot still claiming when ZooKeeper went away waits out the call timeout past "
        "the node's stop deadline: taken for a stuck handler, it keeps the session and the "
        "client reconnecting for ever"),
    Mutant(
        "plans-checked-before-the-publish", "xconsumer/node.py",
        '        rebalance = int(overrides.get("rebalance", 0))\n',
        '        self._verify_plans()\n        rebalance = int(overrides.get("rebalance", 0))\n',
        [f"{PL}::test_a_pass_due_for_the_plans_check_publishes_first"],
        "the leader's check of every plan (a stat each) runs in front of the publish: at "
        "1,000 members a join whose pass falls due for it waits behind 1,000 stats"),
    Mutant(
        "plans-checked-in-a-pass-a-change-woke", "xconsumer/node.py",
        "        if since <= FULL_PASS_EVERY or not (timer or since > 2 * FULL_PASS_EVERY):\n",
        "        if since <= FULL_PASS_EVERY:\n",
        [f"{PL}::test_the_plans_check_waits_for_a_pass_of_the_reconcile_timer"],
        "the leader's check of every plan runs in the pass a change woke: at 1,000 members "
        "a crash's handover carries the leader's 999 stats"),
    Mutant(
        "a-timer-pass-with-a-deadline-ahead-is-no-timer-pass", "xconsumer/node.py",
        '                reasons = {"wake" if due else "periodic"}\n',
        '                reasons = {"wake" if wakes else "periodic"}\n',
        [f"{PL}::test_the_plans_check_waits_for_a_pass_of_the_reconcile_timer"],
        "a leader with any deadline ahead (a keyed task always has one) never gets a pass "
        "of the timer: its plans check comes only when overdue, in a pass a change woke"),
    Mutant(
        "kept-listing-used-after-a-change", "xconsumer/membership.py",
        "        if _key(stat) == listing.key:\n",
        "        if stat.czxid == listing.key[0]:\n",
        [f"{MR}::test_a_kept_listing_is_used_only_while_no_member_came_or_went"],
        "a follower's periodic pass keeps its last listing although members came or went: "
        "it never learns of a join or a leave that a watch missed"),
    Mutant(
        "periodic-full-pass-lists-every-time", "xconsumer/node.py",
        "                recheck=timer))",
        "                recheck=False))",
        [f"{MR}::test_a_followers_periodic_full_pass_does_not_list_members_that_did_not_change"],
        "every follower's periodic full pass lists every member: N reads of N names per "
        "FULL_PASS_EVERY, the idle cost that grows with the square of the cluster"),
    Mutant(
        "plans-check-skipped-with-the-chores", "xconsumer/node.py",
        "        except _ZK_ERRORS as exc:\n            logger.warning(\"housekeeping skipped this "
        "pass ({}: {})\", type(exc).__name__, exc)\n",
        "        except _ZK_ERRORS as exc:\n            logger.warning(\"housekeeping skipped this "
        "pass ({}: {})\", type(exc).__name__, exc)\n            return\n",
        [f"{PL}::test_a_failing_chore_does_not_stop_the_plans_check"],
        "a housekeeping chore that fails on every pass (a left marker that cannot be "
        "deleted) stops the leader's check of the plans: a plan changed by hand is never "
        "written again"),
    Mutant(
        "keys-due-ignores-the-debounce", "xconsumer/node.py",
        "                keys_due = max(keys_due, self._debouncing_until)\n",
        "                keys_due = keys_due\n",
        [f"{DB}::test_a_keys_call_due_while_debouncing_waits_for_the_window"],
        "a keys provider falling due while the leader debounces a membership change keeps "
        "the controller's wake-up in the past: pass after pass, with no wait, through the "
        "window"),
    Mutant(
        "removed-task-keeps-its-hung-call", "xconsumer/keys.py",
        "                if name not in keyed:\n",
        "                if name not in keyed and self._states[name].thread is None:\n",
        ["tests/unit/test_keys.py::"
         "test_a_task_removed_while_its_provider_hangs_leaves_no_deadline_behind"],
        "a keyed task removed while its provider hangs keeps the hang's deadline in the "
        "past for good: the leader's controller runs pass after pass without waiting"),
    Mutant(
        "to-thread-work-outlives-its-slot", "xconsumer/executors/coroutine.py",
        "        run = _RUN.get()\n",
        "        run = None\n",
        [f"{AS}::test_a_revoked_slot_lets_go_only_once_its_to_thread_work_ends"],
        "a coroutine slot cancelled while awaiting asyncio.to_thread lets go of its owner "
        "znode while the call still runs: the slot's next owner starts beside it"),
    Mutant(
        "overran-run-not-drained", "xconsumer/executors/coroutine.py",
        "        if isinstance(outcome, Overran) and run is not None:\n",
        "        if False:\n",
        ["tests/unit/test_coroutine_loop.py::"
         "test_a_run_over_its_run_timeout_ends_its_call_before_the_next_run"],
        "a coroutine run cancelled at its run_timeout leaves its to_thread call running "
        "while the next run of the slot starts beside it"),
    Mutant(
        "slot-lets-go-before-its-calls-end", "xconsumer/executors/coroutine.py",
        "        while pending:\n            wait_futures(pending, timeout=POLL * 4)\n",
        "        while False:\n            wait_futures(pending, timeout=POLL * 4)\n",
        ["tests/unit/test_coroutine_loop.py::"
         "test_a_stopped_slot_returns_only_once_its_to_thread_call_has",
         "tests/unit/test_coroutine_loop.py::"
         "test_a_stop_while_a_timed_out_runs_call_drains_waits_for_the_call"],
        "a stopped coroutine slot returns (and lets go of its owner znode) while a blocking "
        "call it handed to asyncio.to_thread still runs"),
    # -- found by the read-only review of 2026-12-03 (untrusted data) --------------------
    Mutant(
        "json-depth-unchecked", "xconsumer/codecs.py",
        "        if nested_deeper_than({k: v for k, v in doc.items() if k not in checked}\n",
        "        if False and nested_deeper_than({k: v for k, v in doc.items()\n"
        "                                         if k not in checked}\n",
        [f"{COD}::test_any_nesting_decodes_to_data_python_can_copy_and_encode_or_is_corrupt",
         f"{H}::test_corrupt_overrides_keep_the_last_valid_ones_until_a_write_repairs_them"],
        "JSON 600 levels deep in the overrides decodes, then copy.deepcopy fails every "
        "publish and every API request"),
    Mutant(
        "nan-accepted-from-znodes", "xconsumer/codecs.py",
        "        return json.loads(raw.decode(), parse_constant=_no_constant)\n",
        "        return json.loads(raw.decode())\n",
        [f"{COD}::test_nan_and_infinity_are_corrupt_in_every_kind",
         f"{CK}::test_a_corrupt_checkpoint_is_never_read_as_none"],
        "NaN in a checkpoint is served by the API in a response no browser parses"),
    Mutant(
        "member-weight-unbounded", "xconsumer/codecs.py",
        "    out[\"weight\"] = clamp_weight(out[\"weight\"])\n",
        "",
        [f"{COD}::test_a_members_weight_is_read_within_the_documented_range"],
        "a member weight of 1e-309 reaches the strategies"),
    Mutant(
        "strategy-weight-unclamped", "xconsumer/strategies/base.py",
        "    return clamp_weight(float(w)) if ok else 1.0\n",
        "    return float(w) if ok else 1.0\n",
        ["tests/unit/strategies/test_strategy_properties.py::"
         "test_extreme_weights_count_as_the_nearest_bound_instead_of_overflowing"],
        "round(w / low) overflows and the leader's every pass fails"),
    Mutant(
        "overrides-stand-in-always-keyed", "xconsumer/codecs.py",
        "            container = (any(changes.get(k) is not None for k in (\"image\", \"command\", "
        "\"env\"))\n",
        "            container = False and (any(changes.get(k) is not None for k in (\"image\", "
        "\"command\", \"env\"))\n",
        [f"{COD}::test_whatever_the_api_writes_into_the_overrides_decodes"],
        "an image the API accepted and wrote is read by every node as corrupt overrides"),
    Mutant(
        "request-counter-overflows", "xconsumer/overrides.py",
        "    return value + 1 if value < MAX_GENERATION else 1\n",
        "    return value + 1\n",
        [f"{COD}::test_request_counters_wrap_instead_of_going_past_what_the_decoder_accepts"],
        "a rebalance request at the counter's cap writes overrides the decoder refuses"),
    Mutant(
        "api-body-depth-unchecked", "xconsumer/admin/api.py",
        "    if nested_deeper_than(data, MAX_JSON_DEPTH):\n",
        "    if False:\n",
        ["tests/unit/test_admin_hardening.py::test_bad_bodies_are_a_one_line_400"],
        "a body 600 levels deep reaches the handlers"),
    Mutant(
        "params-depth-unchecked", "xconsumer/config.py",
        "        if nested_deeper_than(item, MAX_VALUE_DEPTH):\n",
        "        if False:\n",
        ["tests/unit/test_keys.py::test_keyed_and_params_config_errors"],
        "a params entry nested past what the overrides decoder reads is accepted"),
    Mutant(
        "checkpoint-depth-unchecked", "xconsumer/checkpoint.py",
        "    if nested_deeper_than(value, MAX_VALUE_DEPTH):\n",
        "    if False:\n",
        [f"{CK}::test_values_that_cannot_be_stored_get_a_clear_error"],
        "ctx.commit stores a value nested past what readers accept"),
]
