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
import type { AnnotationQuery, Dashboard, DataQuery } from '@grafana/schema';

type IsAny<T> = 0 extends 1 & T ? true : false;

export type Json<T> =
  IsAny<T> extends true ? T
  : T extends string ? `${T}`
  : T extends number | boolean | bigint | null | undefined ? T
  : T extends (...args: never[]) => unknown ? T
  : T extends ReadonlyArray<infer U> ? Array<Json<U>>
  : T extends object ? { [K in keyof T]: Json<T[K]> }
  : T;

/**
 * An annotation's `target` is its data source's query, as a panel's targets
 * are: the schema types it as the base `DataQuery` (refId, hide, ...), which
 * every data source extends with its own fields (Prometheus: `expr`,
 * `interval`). The Prometheus data source also reads how to label an event
 * from the annotation itself (`titleFormat`, `textFormat`, `tagKeys`,
 * `useValueForTime`); those four are allowed, typed, and nothing else is.
 */
type PrometheusAnnotation = Omit<AnnotationQuery, 'target'> & {
  target?: DataQuery & Record<string, unknown>;
  titleFormat?: string;
  textFormat?: string;
  tagKeys?: string;
  useValueForTime?: boolean;
};

type DashboardWithAnnotations = Omit<Dashboard, 'annotations'> & {
  annotations?: { list?: PrometheusAnnotation[] };
};

export type DashboardJson = Json<DashboardWithAnnotations>;
