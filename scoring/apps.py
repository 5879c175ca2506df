from django.apps import AppConfig


class ScoringConfig(AppConfig):
    name = "scoring"

    def ready(self) -> None:
        from django.utils import timezone

        from accounts import panels, scores_hook
        from scoring.panels import score_panel
        from scoring.selectors import score_value_expression, scores_by_entity
        from scoring.services import rescore_changed
        from signals import processing

        scores_hook.register(
            lookup=scores_by_entity,
            expression=score_value_expression,
            kinds={"account": ("conversion", "churn"), "user": ("health",), "membership": ("champion",)},
        )
        panels.register(score_panel, order=10)
        # After the rollups (which features read): rescore what changed, within a minute of new events. In a
        # transaction of its own: what ran before is committed first, so playbooks that read no score are
        # evaluated without waiting for the rescore (ADR 0028).
        processing.register(lambda tenant, entities: rescore_changed(tenant, entities, timezone.now()), order=100,
                            after_commit=True)  # fmt: skip
