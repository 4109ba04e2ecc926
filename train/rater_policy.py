"""Which raters' judgements count in an export, from their agreement with the other raters.

`python -m train.export ... --min-rater-alpha 0.4 --rater-policy exclude|weight`: each rater's
Krippendorff alpha on `overall` against the median of the others (``mvp.store.agreement``) decides
whether their ratings, thumbs and comparisons are kept, down-weighted or left out; the manifest
records the decision per rater under ``rater_agreement``.
"""

from __future__ import annotations

RATER_POLICIES = ("exclude", "weight")
RATER_ALPHA_MEASURE = "overall"  # the score the export aggregates: a rater's agreement is judged on it


def rater_weights(report: dict, options) -> tuple[dict[str, float], dict]:
    """(rater -> weight, the manifest's record) from an agreement report (``Store.agreement_report``)
    and the export options: each rater's alpha on `overall` against the others' median. Below
    `min_rater_alpha`: weight 0 (policy exclude) or max(alpha, 0) / threshold (policy weight; a
    threshold <= 0 gives 0). A rater without enough overlap to measure keeps weight 1, listed as such."""
    weights, raters, threshold = {}, [], options.min_rater_alpha
    for entry in report["raters"]:
        measure = entry["measures"].get(RATER_ALPHA_MEASURE)
        if measure is None:
            continue
        alpha, action, weight = measure["alpha"], "kept", 1.0
        if alpha is None:
            action = "not_enough_overlap"
        elif alpha < threshold:
            weight = 0.0 if options.rater_policy == "exclude" or threshold <= 0 else round(max(alpha, 0) / threshold, 4)
            action = "excluded" if weight == 0 else "weighted"
            weights[entry["rater"]] = weight
        raters.append({"rater": entry["rater"], "alpha": alpha, "n_items": measure["n_items"], "action": action,
                       "weight": weight})
    record = {"min_alpha": threshold, "policy": options.rater_policy, "measure": f"{RATER_ALPHA_MEASURE} (interval, "
              "rater vs the median of the others)", "raters": raters}
    return weights, record
