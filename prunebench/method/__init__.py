"""The interface every pruning method implements, and the registry that finds methods by name.

- ``base``     -- ``PruningMethod`` (the hooks the trainer calls) and ``TrainingPlan``
- ``registry`` -- ``@register("name")``, ``get``, ``available``, ``build``; imports the ``methods``
                  package lazily, so the core never imports a method module
"""
