/* The area-of-interest helpers of pylon/sim.h (protocol.md §4.6): sphere and box membership
 * (boundaries included), the grid cell of a coordinate (a floor, negative values and exact
 * negative multiples of the cell size included) and grid nearness. */
#include "pylon/sim.h"

#include <criterion/criterion.h>

Test(aoi, sphere_contains)
{
    const pylon_aoi_sphere s = {.x = 1, .y = 2, .z = 3, .radius = 5};
    cr_assert(pylon_aoi_sphere_contains(&s, 1, 2, 3), "the centre");
    cr_assert(pylon_aoi_sphere_contains(&s, 2, 3, 4), "inside");
    /* on the surface: 3-4-5 triangles, exact in binary */
    cr_assert(pylon_aoi_sphere_contains(&s, 1 + 3, 2 + 4, 3));
    cr_assert(pylon_aoi_sphere_contains(&s, 1, 2 - 3, 3 - 4));
    cr_assert(pylon_aoi_sphere_contains(&s, 1 + 5, 2, 3));
    cr_assert(pylon_aoi_sphere_contains(&s, 1, 2, 3 - 5));
    /* outside, along each axis and in 3D: each coordinate within the radius, the distance not */
    cr_assert_not(pylon_aoi_sphere_contains(&s, 1 + 5.001, 2, 3));
    cr_assert_not(pylon_aoi_sphere_contains(&s, 1, 2 - 5.001, 3));
    cr_assert_not(pylon_aoi_sphere_contains(&s, 1, 2, 3 + 5.001));
    cr_assert_not(pylon_aoi_sphere_contains(&s, 1 + 3, 2 + 3, 3 + 3), "(3,3,3) away: √27 > 5");
    cr_assert(pylon_aoi_sphere_contains(&s, 1 + 2.8, 2 + 2.8, 3 + 2.8),
              "(2.8,2.8,2.8): √23.52 < 5");
    const pylon_aoi_sphere point = {.x = -1, .y = -1, .z = -1, .radius = 0};
    cr_assert(pylon_aoi_sphere_contains(&point, -1, -1, -1), "radius 0 holds its centre");
    cr_assert_not(pylon_aoi_sphere_contains(&point, -1, -1, -1.0001));
}

Test(aoi, box_contains)
{
    const pylon_aoi_box b = {
        .min_x = -10, .min_y = 0, .min_z = 5, .max_x = 10, .max_y = 4, .max_z = 6};
    cr_assert(pylon_aoi_box_contains(&b, 0, 2, 5.5), "inside");
    /* on each face and a corner: the bounds are inclusive */
    cr_assert(pylon_aoi_box_contains(&b, -10, 2, 5.5));
    cr_assert(pylon_aoi_box_contains(&b, 10, 2, 5.5));
    cr_assert(pylon_aoi_box_contains(&b, 0, 0, 5.5));
    cr_assert(pylon_aoi_box_contains(&b, 0, 4, 5.5));
    cr_assert(pylon_aoi_box_contains(&b, 0, 2, 5));
    cr_assert(pylon_aoi_box_contains(&b, 0, 2, 6));
    cr_assert(pylon_aoi_box_contains(&b, 10, 4, 6));
    /* outside on each axis, below and above, the other two coordinates inside */
    cr_assert_not(pylon_aoi_box_contains(&b, -10.01, 2, 5.5));
    cr_assert_not(pylon_aoi_box_contains(&b, 10.01, 2, 5.5));
    cr_assert_not(pylon_aoi_box_contains(&b, 0, -0.01, 5.5));
    cr_assert_not(pylon_aoi_box_contains(&b, 0, 4.01, 5.5));
    cr_assert_not(pylon_aoi_box_contains(&b, 0, 2, 4.99));
    cr_assert_not(pylon_aoi_box_contains(&b, 0, 2, 6.01));
}

Test(aoi, grid_cell_is_a_floor)
{
    const pylon_aoi_grid g = {.cell_size = 100, .radius_cells = 1};
    cr_assert_eq(pylon_aoi_grid_cell(&g, 0), 0);
    cr_assert_eq(pylon_aoi_grid_cell(&g, -0.0), 0);
    cr_assert_eq(pylon_aoi_grid_cell(&g, 1), 0);
    cr_assert_eq(pylon_aoi_grid_cell(&g, 99.99), 0);
    cr_assert_eq(pylon_aoi_grid_cell(&g, 100), 1);
    cr_assert_eq(pylon_aoi_grid_cell(&g, 250), 2);
    cr_assert_eq(pylon_aoi_grid_cell(&g, -0.01), -1);
    cr_assert_eq(pylon_aoi_grid_cell(&g, -99.99), -1);
    cr_assert_eq(pylon_aoi_grid_cell(&g, -150), -2);
    /* exact negative multiples: -100 is the first point of cell -1, as 100 is of cell 1 */
    cr_assert_eq(pylon_aoi_grid_cell(&g, -100), -1);
    cr_assert_eq(pylon_aoi_grid_cell(&g, -200), -2);
    cr_assert_eq(pylon_aoi_grid_cell(&g, -100000), -1000);
    cr_assert_eq(pylon_aoi_grid_cell(&g, -100.01), -2);
    const pylon_aoi_grid half = {.cell_size = 0.5, .radius_cells = 0};
    cr_assert_eq(pylon_aoi_grid_cell(&half, -1), -2);
    cr_assert_eq(pylon_aoi_grid_cell(&half, -1.25), -3);
    cr_assert_eq(pylon_aoi_grid_cell(&half, 1.25), 2);
    /* every cell is cell_size wide: each integer step of 25 lands where floor says */
    for (int v = -1000; v <= 1000; v += 25) {
        long want = v >= 0 ? v / 100 : -((-v + 99) / 100);
        cr_assert_eq(pylon_aoi_grid_cell(&g, v), want, "cell of %d: %ld, want %ld", v,
                     pylon_aoi_grid_cell(&g, v), want);
    }
}

Test(aoi, grid_near)
{
    const pylon_aoi_grid g = {.cell_size = 100, .radius_cells = 1};
    cr_assert(pylon_aoi_grid_near(&g, 50, 50, 50, 50), "the same point");
    cr_assert(pylon_aoi_grid_near(&g, 50, 50, 199, 150), "the next cell on both axes");
    cr_assert(pylon_aoi_grid_near(&g, 150, 150, 0, 299), "one cell either way");
    /* just outside: two cells away on one axis, whatever the other */
    cr_assert_not(pylon_aoi_grid_near(&g, 99, 50, 200, 50));
    cr_assert_not(pylon_aoi_grid_near(&g, 50, 99, 50, 200));
    cr_assert_not(pylon_aoi_grid_near(&g, 150, 150, 150, -0.01), "cell 1 and cell -1 on z");
    /* negative coordinates: cells -1 and -2 are neighbours, -1 and -3 are not */
    cr_assert(pylon_aoi_grid_near(&g, -50, -50, -150, -150));
    cr_assert(pylon_aoi_grid_near(&g, -100, -100, -200, -200), "exact multiples: cells -1, -2");
    cr_assert_not(pylon_aoi_grid_near(&g, -50, -50, -201, -50));
    cr_assert_not(pylon_aoi_grid_near(&g, -100, -50, -300, -50), "cells -1 and -3");
    /* across zero: -0.01 is cell -1, next to cell 0 but two from cell 1 */
    cr_assert(pylon_aoi_grid_near(&g, -0.01, 0, 99.99, 0));
    cr_assert(pylon_aoi_grid_near(&g, -100, 0, 99, 0), "cells -1 and 0");
    cr_assert_not(pylon_aoi_grid_near(&g, -0.01, 0, 100, 0), "cells -1 and 1");
    cr_assert_not(pylon_aoi_grid_near(&g, 0, -100, 0, 100), "cells -1 and 1 on z");
    const pylon_aoi_grid wide = {.cell_size = 100, .radius_cells = 2};
    cr_assert(pylon_aoi_grid_near(&wide, -0.01, 0, 100, 0));
    cr_assert(pylon_aoi_grid_near(&wide, -100, 0, 199, 0), "cells -1 and 1");
    cr_assert_not(pylon_aoi_grid_near(&wide, -100.01, 0, 199, 0), "cells -2 and 1");
    const pylon_aoi_grid none = {.cell_size = 100, .radius_cells = 0};
    cr_assert(pylon_aoi_grid_near(&none, -100, -100, -1, -1), "radius 0: the same cell -1");
    cr_assert_not(pylon_aoi_grid_near(&none, -100, 0, -100.01, 0));
}
