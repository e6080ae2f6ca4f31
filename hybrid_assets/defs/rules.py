"""When things run, as Dagster declarative automation conditions (one place, read by both paths).

- A source asset (a folder of files) is observed every minute; its data version is the content
  hash, so an observation changes it only when a file is added, removed or edited.
- A path's assets run when a parent's data version changes (``eager``: new document hash -> chunks
  -> index; new behaviour data hash -> dataset -> adapter). The knowledge path also re-syncs daily.
- Each path has its own automation sensor that targets only its own group, so evaluating one never
  requests the other's assets (tested with Dagster's own ``evaluate_automation_conditions``).
"""

import dagster as dg

OBSERVE_EVERY_MINUTE = dg.AutomationCondition.cron_tick_passed("* * * * *") & ~dg.AutomationCondition.in_progress()
ON_PARENT_CHANGE = dg.AutomationCondition.eager()
# Promotion: only after the parent's blocking checks (the gate) passed. A blocking check stops
# downstream steps of its own run only; without this, a later tick could promote a refused adapter.
ON_PARENT_CHANGE_GATED = dg.AutomationCondition.eager() & dg.AutomationCondition.all_deps_blocking_checks_passed()
ON_PARENT_CHANGE_OR_DAILY = dg.AutomationCondition.eager() | dg.AutomationCondition.on_cron("0 3 * * *")
