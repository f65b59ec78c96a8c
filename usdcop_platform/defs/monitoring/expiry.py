"""Proposal expiry: a promotion proposal still PENDING_APPROVAL past its `expires_at` becomes EXPIRED.

Reviewers are refused on an expired proposal (the approval service expires it when one tries), but
a proposal nobody opens would stay pending forever. The hourly schedule runs `proposal_expiry_job`,
whose op calls `store.proposals.expire_due`: in one transaction under the registry lock, each due
proposal becomes EXPIRED with one EXPIRE audit row (reviewer `system:proposal_expiry`). The op's
output metadata lists the expired proposals, so the run says what it did.
"""

import dagster as dg

from usdcop_platform.defs.resources import PlatformResource

EXPIRY_REVIEWER = "system:proposal_expiry"
EXPIRY_CRON = "7 * * * *"  # hourly; a proposal's review window is days (evaluation.promotion.proposal_ttl_days)
EXPIRY_TIMEZONE = "UTC"  # expires_at is an instant: the hour's zone does not matter


@dg.op(description="Mark pending promotion proposals past expires_at as EXPIRED (one EXPIRE audit row each)")
def expire_due_proposals(context: dg.OpExecutionContext, platform: PlatformResource) -> dg.Output[list[str]]:
    expired = platform.store().proposals.expire_due(reviewer=EXPIRY_REVIEWER)
    context.log.info(f"expired {len(expired)} proposal(s) past their review window: {', '.join(expired) or 'none'}")
    return dg.Output(expired, metadata={"expired": len(expired), "proposal_ids": dg.MetadataValue.json(expired)})


@dg.job(description="Expire promotion proposals left undecided past their review window (audited)")
def proposal_expiry_job() -> None:
    expire_due_proposals()


proposal_expiry_schedule = dg.ScheduleDefinition(
    name="proposal_expiry_schedule",
    cron_schedule=EXPIRY_CRON,
    execution_timezone=EXPIRY_TIMEZONE,
    job=proposal_expiry_job,
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description="Hourly: pending promotion proposals past expires_at become EXPIRED (audited)",
)
