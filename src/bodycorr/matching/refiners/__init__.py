"""Refiners: one module each, one signature (:class:`~bodycorr.matching.refiners.base.Refiner`), one registry.

``get_refiner(name)`` gives a registered refiner; ``list_refiners()`` their names. A refiner turns
the plain nearest-neighbour map between two described scans into a better one:

* ``none`` (:mod:`.none`): the plain map;
* ``spectral`` (:mod:`.spectral`): ZoomOut (functional maps) anchored to the descriptors, flip-tested;
* ``template`` (:mod:`.template`): the body template registered onto both scans (deformation graph);
* ``body`` (:mod:`.body`): Anny's pose and shape fitted onto both, then the graph;
* ``register`` (:mod:`.register`): the source mesh deformed onto the target (Wei et al.'s CNN-S);
* ``auto`` (:mod:`.auto`, the default): every pair meets on the template through Anny fitted onto
  both scans (a complete one from its spectral map to the template, a partial one from its descriptors).

A new refiner is one module with a class following :class:`~.base.Refiner` and a line in
:data:`~.base.REGISTRY` (``register_refiner``).
"""

from bodycorr.matching.refiners.base import (
    Prepared,
    Refined,
    RefineContext,
    Refiner,
    get_refiner,
    list_refiners,
    register_refiner,
)

__all__ = ["Prepared", "Refined", "RefineContext", "Refiner", "get_refiner", "list_refiners", "register_refiner"]
