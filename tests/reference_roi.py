"""The ROI reference: docs/semantics.md "Marketing ROI" computed the obvious way from complete lists, independent of
streams.domain.roi (nothing imported from it). Input: the engagement reference's results (summaries, leads and
what tests/reference.py records for ROI) and every opportunity version in any order."""

from __future__ import annotations

from collections import defaultdict

DAY = 86_400_000
RANK = {"created": 0, "qualified": 1, "won": 2, "lost": 3}


def roi_reference(results: dict, versions: list[dict], *, days: int = 30, key_days: int = 90,
                  model: str = "last_touch") -> dict[str, dict]:
    by_org = defaultdict(list)
    for event_id, r in results.items():
        by_org[r.summary["organizer_id"] or "default"].append(event_id)
    opps = defaultdict(list)
    for v in versions:
        opps[(v.get("organizer_id") or "default", v["opportunity_id"])].append(v)
    out = {}
    for org, event_ids in by_org.items():
        start = {e: results[e].roi["start"] for e in event_ids}
        end = {e: results[e].summary["ended_at"] for e in event_ids}
        window = {e: (results[e].roi.get("attribution_days") or days,
                      results[e].roi.get("attribution_days_key_accounts") or key_days) for e in event_ids}
        # leads (attendees or registrants) per event, and each person's first event
        people = {e: {x["attendee_id"] for x in results[e].leads if x["attended"] or x["registered"]}
                  for e in event_ids}
        first = {}
        for e in sorted(event_ids, key=lambda e: (start[e], e), reverse=True):
            for aid in people[e]:
                first[aid] = e
        attended = {e: {x["attendee_id"]: x for x in results[e].leads if x["attended"]} for e in event_ids}
        accounts = {e: {a for aid in attended[e] for a in results[e].roi["accounts"][aid]} for e in event_ids}
        opportunities = {e: 0.0 for e in event_ids}
        pipeline = {e: defaultdict(float) for e in event_ids}
        won = {e: defaultdict(float) for e in event_ids}
        for (o_org, oid), vs in sorted(opps.items()):
            if o_org != org:
                continue
            created = min(v["ts"] for v in vs)
            latest = max(vs, key=lambda v: (v["ts"], RANK[v["stage"]], v.get("amount", 0), v.get("currency") or ""))
            won_at = min((v["ts"] for v in vs if v["stage"] == "won"), default=None)
            aid = max(((v["ts"], v["attendee_id"]) for v in vs if "attendee_id" in v), default=(0, None))[1]
            account = max(((v["ts"], v["account_id"]) for v in vs if "account_id" in v), default=(0, None))[1]
            touching = []
            for e in event_ids:
                if not (aid in attended[e] or (account is not None and account in accounts[e])):
                    continue
                key = (aid in attended[e] and attended[e][aid]["key_account"]) or (
                    account is not None and account in results[e].roi["key_accounts"])
                deadline = end[e] + window[e][1 if key else 0] * DAY
                if end[e] <= created <= deadline:
                    touching.append((e, deadline))
            if not touching:
                continue
            if model == "last_touch":
                touching = [max(touching, key=lambda t: (end[t[0]], t[0]))]
            for e, deadline in touching:
                share = 1 / len(touching)
                opportunities[e] += share
                cur = latest.get("currency") or "XXX"
                if latest["stage"] != "lost":
                    pipeline[e][cur] += share * latest.get("amount", 0)
                if latest["stage"] == "won" and won_at <= deadline:
                    won[e][cur] += share * latest.get("amount", 0)
        for e in event_ids:
            s = results[e].summary
            cost, currency = s["cost"], s["currency"]
            new = sum(1 for aid, f in first.items() if f == e)
            out[e] = {
                "event_id": e, "organizer_id": org, "title": s["title"], "started_at": start[e], "ended_at": end[e],
                "cost": cost, "currency": currency, "registrations": s["registrations"],
                "unique_attendees": s["unique_attendees"], "attendance_rate": s["attendance_rate"],
                "engagement_score": s["engagement_score"], "mqls": s["mqls"], "leads": len(people[e]),
                "new_leads": new, "cost_per_new_lead": cost / new if cost is not None and new else None,
                "opportunities": opportunities[e], "pipeline": dict(pipeline[e]), "won": dict(won[e]),
                "roi": (won[e].get(currency, 0.0) - cost) / cost if cost and currency else None,
                "attribution_model": model, "attribution_days": window[e][0],
                "attribution_days_key_accounts": window[e][1],
            }
    return out
