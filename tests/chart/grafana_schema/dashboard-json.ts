/**
 * The JSON form of @grafana/schema's v0 `Dashboard` type.
 *
 * The generated schema declares some fields as TypeScript string enums (for
 * example `FieldColorModeId`, `ThresholdsMode`, `MappingType`). TypeScript
 * treats string enums nominally, so the JSON text "palette-classic" is not
 * assignable to `FieldColorModeId` even though that is exactly the value
 * `FieldColorModeId.PaletteClassic` serialises to. `Json<T>` replaces every
 * string enum by the union of its values (`${E}`) and leaves everything else
 * as it is: optionality, required fields, number/boolean types and the
 * Panel | RowPanel union all keep their meaning, and an object literal
 * assigned to `DashboardJson` still gets TypeScript's excess-property check.
 * Numeric enums need no mapping: a JSON number that is one of their values is
 * already assignable.
 */
import type { Dashboard } from '@grafana/schema';

type IsAny<T> = 0 extends 1 & T ? true : false;

export type Json<T> =
  IsAny<T> extends true ? T
  : T extends string ? `${T}`
  : T extends number | boolean | bigint | null | undefined ? T
  : T extends (...args: never[]) => unknown ? T
  : T extends ReadonlyArray<infer U> ? Array<Json<U>>
  : T extends object ? { [K in keyof T]: Json<T[K]> }
  : T;

export type DashboardJson = Json<Dashboard>;
